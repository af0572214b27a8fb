using System.IO.Pipelines;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;
using Microsoft.AspNetCore.Connections;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>What the kernel holds for a connection's receive side.</summary>
internal enum ReceiveRequest
{
    /// <summary>No recv in the kernel, and none queued.</summary>
    None,

    /// <summary>A multishot recv is in the kernel: completions (and the buffers they carry) may still arrive.</summary>
    Armed,

    /// <summary>No recv in the kernel; it is armed again at the end of this ring turn, after recycled buffers are published.</summary>
    RearmQueued,
}

/// <summary>Where the input pipe's flushing is.</summary>
internal enum InputFlush
{
    /// <summary>Every received byte has been flushed to the application.</summary>
    Idle,

    /// <summary>Bytes were written in this batch of completions; one flush follows the batch.</summary>
    Queued,

    /// <summary>The application is behind by MaxReadBufferSize: a flush waits for it, and receiving is paused.</summary>
    Paused,

    /// <summary>Paused, and bytes the kernel delivered before the pause took hold wait for the next flush.</summary>
    PausedWithMoreBytes,
}

/// <summary>
/// The receive direction of one connection: a multishot recv with provided buffers, copied into the input pipe, with
/// back-pressure (pause when the application is MaxReadBufferSize behind, resume when it catches up), as the Sockets
/// transport's receive loop. Everything here runs on the ring thread; the application reads the pipe's other end.
/// </summary>
internal sealed class ConnectionReceiver
{
    // ---- set at construction ----
    private readonly IoUringConnection _connection;
    private readonly RingThread _ring;
    private readonly IoUringTransportContext _context;
    private readonly PipeWriter _input;
    private readonly int _ioFd;
    private readonly bool _ioFixed;
    private readonly ulong _receiveUserData;
    private readonly ulong _cancelUserData;
    private readonly Action _onFlushCompleted;

    // ---- ring thread ----
    private ReceiveRequest _request;
    private InputFlush _flush;
    private bool _inputCompleted; // the input pipe is completed: nothing more is delivered to the application
    private ValueTask<FlushResult> _pausedFlush;

    // ---- written by the ring thread, read by a flushing thread (send batching, FlushingThreadScheduler) ----
    private int _inputFlushes;

    public ConnectionReceiver(IoUringConnection connection, RingThread ring, PipeWriter input, int ioFd, bool ioFixed,
        ulong receiveUserData, ulong cancelUserData)
    {
        _connection = connection;
        _ring = ring;
        _context = ring.Context;
        _input = input;
        _ioFd = ioFd;
        _ioFixed = ioFixed;
        _receiveUserData = receiveUserData;
        _cancelUserData = cancelUserData;
        _onFlushCompleted = OnFlushCompleted;
    }

    /// <summary>True when no recv is in the kernel and no flush waits for the application: the descriptor may close.</summary>
    public bool IsSettled => _request != ReceiveRequest.Armed && !IsPaused;

    private bool IsPaused => _flush is InputFlush.Paused or InputFlush.PausedWithMoreBytes;

    private bool ShouldReceive => !_inputCompleted && !IsPaused && !_connection.IsShuttingDown;

    private IoUringTrace Log => _context.Log;

    // ================================================================================================================
    // The recv request
    // ================================================================================================================

    /// <summary>Arms the multishot recv: at start, and at the end of a turn for a queued re-arm.</summary>
    public unsafe void Arm()
    {
        if (_request == ReceiveRequest.Armed)
        {
            return;
        }
        if (!ShouldReceive)
        {
            _request = ReceiveRequest.None;
            return;
        }
        IoUringSqe* sqe = _ring.Ring.GetSqe();
        SqePreparation.PrepareMultishotReceive(sqe, _ioFd, _ioFixed, _ring.Buffers.GroupId, _receiveUserData);
        _request = ReceiveRequest.Armed;
    }

    private void QueueRearm()
    {
        if (_request != ReceiveRequest.None)
        {
            return;
        }
        _request = ReceiveRequest.RearmQueued;
        _ring.Receives.QueueRearm(_connection);
    }

    private unsafe void Cancel()
    {
        if (_request != ReceiveRequest.Armed)
        {
            return;
        }
        IoUringSqe* sqe = _ring.Ring.GetSqe();
        SqePreparation.PrepareCancel(sqe, _receiveUserData, _cancelUserData);
        sqe->Flags |= SqeFlags.CqeSkipSuccess;
    }

    public void OnCompleted(in IoUringCqe cqe)
    {
        if (!cqe.HasMore)
        {
            _request = ReceiveRequest.None;
        }

        int res = cqe.Result;
        if (res > 0)
        {
            try
            {
                if (!_inputCompleted && !_connection.IsShuttingDown)
                {
                    CopyToInput(_ring.Receives.Received(cqe));
                }
            }
            finally
            {
                // Even when the copy throws (the pool out of memory; the exception then ends this connection): a
                // buffer not given back is lost to every connection of the ring, and in incremental mode its fill
                // mark would lag the kernel's, so the next completion in it would be read from the wrong offset.
                _ring.Receives.Release(cqe);
            }
        }
        else if (res == 0)
        {
            if (!_inputCompleted && !_connection.IsShuttingDown)
            {
                Log.ConnectionReadFin(_connection.ConnectionId);
            }
            Complete(null);
        }
        else
        {
            if (cqe.HasBuffer)
            {
                _ring.Receives.Release(cqe);
            }
            OnError(-res);
        }

        if (_request != ReceiveRequest.Armed)
        {
            if (ShouldReceive)
            {
                // ENOBUFS, a full CQ or another transient end of the multishot: arm again once buffers are back.
                QueueRearm();
            }
            else if (_connection.IsShuttingDown)
            {
                Complete(null);
                _connection.MaybeClose();
            }
        }
    }

    private void OnError(int errno)
    {
        switch (errno)
        {
            case Errno.ENOBUFS:
                _ring.Receives.OnExhausted();
                return;
            case Errno.ECANCELED:
                return; // we cancelled it: back-pressure, shutdown, or the reader went away
            case Errno.ECONNRESET:
            case Errno.EPIPE:
                if (!_connection.IsShuttingDown && !_inputCompleted)
                {
                    Log.ConnectionReset(_connection.ConnectionId);
                    var socketError = SocketErrors.FromErrno(errno);
                    Complete(new ConnectionResetException(socketError.Message, socketError));
                }
                return;
            default:
                if (!_connection.IsShuttingDown && !_inputCompleted)
                {
                    var error = SocketErrors.FromErrno(errno);
                    Log.ConnectionError(_connection.ConnectionId, error);
                    Complete(error);
                }
                return;
        }
    }

    // ================================================================================================================
    // The input pipe
    // ================================================================================================================

    private void CopyToInput(ReadOnlySpan<byte> data)
    {
        _context.Metrics.BytesReceived.Add(data.Length);
        while (!data.IsEmpty)
        {
            Span<byte> destination = _input.GetSpan();
            int n = Math.Min(destination.Length, data.Length);
            data[..n].CopyTo(destination);
            _input.Advance(n);
            data = data[n..];
        }

        switch (_flush)
        {
            case InputFlush.Idle:
                // One flush per connection per batch of completions: a burst of receives wakes the reader once.
                _flush = InputFlush.Queued;
                _ring.Receives.QueueFlush(_connection);
                break;
            case InputFlush.Paused:
                // A flush is already waiting for the reader; these bytes go out with the next one.
                _flush = InputFlush.PausedWithMoreBytes;
                break;
        }
    }

    /// <summary>Called by the ring after a batch of completions for connections that received bytes in it.</summary>
    public void FlushQueued()
    {
        if (_flush != InputFlush.Queued)
        {
            return;
        }
        _flush = InputFlush.Idle;
        if (!_inputCompleted)
        {
            Flush();
        }
    }

    /// <summary>
    /// How many times bytes were flushed to the application so far. Counted before each flush, so a reader that got
    /// those bytes sees the count that includes them (the pipe orders memory between the two threads).
    /// </summary>
    public int InputFlushes => Volatile.Read(ref _inputFlushes);

    private void Flush()
    {
        Volatile.Write(ref _inputFlushes, _inputFlushes + 1);
        ValueTask<FlushResult> flush = _input.FlushAsync();
        if (flush.IsCompletedSuccessfully)
        {
            HandleFlushResult(flush.Result);
            return;
        }

        // The reader is behind by MaxReadBufferSize: stop receiving until it catches up. Bytes the kernel still
        // delivers before the cancel lands are kept (written above), so nothing is lost.
        _flush = InputFlush.Paused;
        _pausedFlush = flush;
        Log.ConnectionPause(_connection.ConnectionId);
        Cancel();
        flush.GetAwaiter().UnsafeOnCompleted(_onFlushCompleted);
    }

    /// <summary>Runs on the ring thread (the input pipe's writer scheduler) once the reader has caught up.</summary>
    private void OnFlushCompleted()
    {
        bool moreBytes = _flush == InputFlush.PausedWithMoreBytes;
        ValueTask<FlushResult> flush = _pausedFlush;
        _pausedFlush = default;
        _flush = InputFlush.Idle;
        FlushResult result;
        try
        {
            result = flush.GetAwaiter().GetResult();
        }
        catch (Exception e)
        {
            Complete(e);
            _connection.MaybeClose();
            return;
        }
        Log.ConnectionResume(_connection.ConnectionId);

        if (!HandleFlushResult(result))
        {
            return;
        }
        if (moreBytes)
        {
            Flush();
        }
        if (ShouldReceive && _request != ReceiveRequest.Armed)
        {
            QueueRearm();
        }
    }

    /// <summary>Returns false when receiving ends because the reader completed or the flush was cancelled.</summary>
    private bool HandleFlushResult(FlushResult result)
    {
        if (result.IsCompleted || result.IsCanceled)
        {
            Complete(null);
            _connection.MaybeClose();
            return false;
        }
        return true;
    }

    // ================================================================================================================
    // Ending
    // ================================================================================================================

    /// <summary>The connection shuts down: cancel the recv, and end receiving now or once the pending flush returns.</summary>
    public void Stop()
    {
        Cancel();
        if (IsPaused)
        {
            _input.CancelPendingFlush(); // OnFlushCompleted then ends receiving
        }
        else if (_request != ReceiveRequest.Armed)
        {
            Complete(null);
        }
    }

    /// <summary>Un-pauses a receive waiting on back-pressure (the send side ended).</summary>
    public void CancelPausedFlush()
    {
        if (IsPaused)
        {
            _input.CancelPendingFlush();
        }
    }

    // ================================================================================================================
    // Ring failure: the ring takes no SQE any more
    // ================================================================================================================

    /// <summary>True while a multishot recv is in the kernel (it may still write provided buffers).</summary>
    public bool KernelHoldsRecv => _request == ReceiveRequest.Armed;

    /// <summary>A recv completion reaped while the failed ring drains: only notes whether the kernel let go of the request.</summary>
    public void OnCompletionWhileDraining(in IoUringCqe cqe)
    {
        if (!cqe.HasMore)
        {
            _request = ReceiveRequest.None;
        }
    }

    /// <summary>The ring failed: the input completes with <paramref name="reason"/> without a cancel SQE.</summary>
    public void CompleteAfterRingFailure(Exception reason)
    {
        if (_inputCompleted)
        {
            return;
        }
        _inputCompleted = true;
        _input.Complete(reason);
        _connection.OnReceiveEnded();
    }

    /// <summary>Receiving is over: complete the input pipe and signal ConnectionClosed, as the Sockets transport's receive loop does on exit.</summary>
    public void Complete(Exception? error)
    {
        if (_inputCompleted)
        {
            return;
        }
        _inputCompleted = true;
        Cancel();
        _input.Complete(_connection.ShutdownReason ?? error);
        _connection.OnReceiveEnded();
    }
}
