using System.IO.Pipelines;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;
using Microsoft.AspNetCore.Connections;

namespace Kestrel.Transport.IoUring.Transport;

// The receive half of IoUringConnection: multishot recv into the input pipe, with back-pressure.
internal sealed partial class IoUringConnection
{
    // ================================================================================================================
    // Receive (ring thread)
    // ================================================================================================================

    private int IoFd => _fixedSlot >= 0 ? _fixedSlot : _fd;

    private bool IoFixed => _fixedSlot >= 0;

    private bool ShouldReceive => !_receiveDone && !_flushPending && _shutdownReason is null;

    public unsafe void ArmReceive()
    {
        if (_receiveArmed || !ShouldReceive)
        {
            return;
        }
        IoUringSqe* sqe = _ring.Ring.GetSqe();
        SqePreparation.PrepareMultishotReceive(sqe, IoFd, IoFixed, _ring.Buffers.GroupId, _receiveUserData);
        _receiveArmed = true;
    }

    private unsafe void CancelReceive()
    {
        if (!_receiveArmed)
        {
            return;
        }
        IoUringSqe* sqe = _ring.Ring.GetSqe();
        SqePreparation.PrepareCancel(sqe, _receiveUserData, _cancelUserData);
        sqe->Flags |= SqeFlags.CqeSkipSuccess;
    }

    public void OnReceiveCompleted(in IoUringCqe cqe)
    {
        if (!cqe.HasMore)
        {
            _receiveArmed = false;
        }

        int res = cqe.Result;
        if (res > 0)
        {
            if (!_receiveDone && _shutdownReason is null)
            {
                CopyToInput(_ring.Receives.Received(cqe));
            }
            _ring.Receives.Release(cqe);
        }
        else if (res == 0)
        {
            if (!_receiveDone && _shutdownReason is null)
            {
                _log.ConnectionReadFin(ConnectionId);
            }
            CompleteReceive(null);
        }
        else
        {
            if (cqe.HasBuffer)
            {
                _ring.Receives.Release(cqe);
            }
            OnReceiveError(-res);
        }

        if (!_receiveArmed)
        {
            if (ShouldReceive)
            {
                // ENOBUFS, a full CQ or another transient end of the multishot: arm again once buffers are back.
                _ring.Receives.QueueRearm(this);
            }
            else if (_shutdownReason is not null)
            {
                CompleteReceive(null);
                MaybeClose();
            }
        }
    }

    private void OnReceiveError(int errno)
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
                if (_shutdownReason is null && !_receiveDone)
                {
                    _log.ConnectionReset(ConnectionId);
                    var socketError = SocketErrors.FromErrno(errno);
                    CompleteReceive(new ConnectionResetException(socketError.Message, socketError));
                }
                return;
            default:
                if (_shutdownReason is null && !_receiveDone)
                {
                    var error = SocketErrors.FromErrno(errno);
                    _log.ConnectionError(ConnectionId, error);
                    CompleteReceive(error);
                }
                return;
        }
    }

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

        if (_flushPending)
        {
            // A flush is already waiting for the reader; these bytes go out with the next one.
            _unflushedInput = true;
            return;
        }
        if (!_flushQueued)
        {
            // One flush per connection per batch of completions: a burst of receives wakes the reader once.
            _flushQueued = true;
            _ring.Receives.QueueFlush(this);
        }
    }

    /// <summary>Called by the ring after a batch of completions for connections that received bytes in it.</summary>
    public void FlushQueuedInput()
    {
        _flushQueued = false;
        if (!_receiveDone && !_flushPending)
        {
            FlushInput();
        }
    }

    private void FlushInput()
    {
        ValueTask<FlushResult> flush = _input.FlushAsync();
        if (flush.IsCompletedSuccessfully)
        {
            HandleFlushResult(flush.Result);
            return;
        }

        // The reader is behind by MaxReadBufferSize: stop receiving until it catches up. Bytes the kernel still
        // delivers before the cancel lands are kept (written above), so nothing is lost.
        _flushPending = true;
        _pendingFlush = flush;
        _log.ConnectionPause(ConnectionId);
        CancelReceive();
        flush.GetAwaiter().UnsafeOnCompleted(_onFlushCompleted);
    }

    /// <summary>Runs on the ring thread (the input pipe's writer scheduler) once the reader has caught up.</summary>
    private void OnFlushCompleted()
    {
        FlushResult result;
        try
        {
            result = _pendingFlush.GetAwaiter().GetResult();
        }
        catch (Exception e)
        {
            _flushPending = false;
            _pendingFlush = default;
            CompleteReceive(e);
            MaybeClose();
            return;
        }
        _flushPending = false;
        _pendingFlush = default;
        _log.ConnectionResume(ConnectionId);

        if (!HandleFlushResult(result))
        {
            return;
        }
        if (_unflushedInput)
        {
            _unflushedInput = false;
            FlushInput();
        }
        if (ShouldReceive && !_receiveArmed)
        {
            _ring.Receives.QueueRearm(this);
        }
    }

    /// <summary>Returns false when receiving ends because the reader completed or the flush was cancelled.</summary>
    private bool HandleFlushResult(FlushResult result)
    {
        if (result.IsCompleted || result.IsCanceled)
        {
            CompleteReceive(null);
            MaybeClose();
            return false;
        }
        return true;
    }

    /// <summary>Receiving is over: complete the input pipe and signal ConnectionClosed, as the Sockets transport's receive loop does on exit.</summary>
    private void CompleteReceive(Exception? error)
    {
        if (_receiveDone)
        {
            return;
        }
        _receiveDone = true;
        CancelReceive();
        _input.Complete(_shutdownReason ?? error);
        FireConnectionClosed();
    }

    private void FireConnectionClosed()
    {
        ThreadPool.UnsafeQueueUserWorkItem(static c =>
        {
            try
            {
                c._connectionClosedSource.Cancel();
            }
            catch (Exception e)
            {
                c._log.ConnectionError(c.ConnectionId, e);
            }
            c._connectionClosedFired.TrySetResult();
        }, this, preferLocal: false);
    }
}
