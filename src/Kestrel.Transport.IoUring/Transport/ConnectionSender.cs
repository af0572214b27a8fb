using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>Where a connection's send direction is. Exactly one send is in progress at a time, whichever path it takes.</summary>
internal enum SenderState
{
    /// <summary>No send in progress: waiting for the application to flush, or between two sends.</summary>
    Idle,

    /// <summary>The thread that flushed the output is in a non-blocking send(2)/sendmsg(2) on the socket's descriptor.</summary>
    DirectSending,

    /// <summary>A SEND or SENDMSG (or a registered-arena SEND_ZC) is in the ring; its result arrives on the ring thread.</summary>
    RingSending,

    /// <summary>A SEND_ZC or SENDMSG_ZC of pipe memory is in the ring; its result has not arrived yet.</summary>
    ZeroCopySending,

    /// <summary>A zero-copy send's result arrived; the pipe memory stays the kernel's until the notification.</summary>
    AwaitingZeroCopyNotification,

    /// <summary>
    /// The ring failed while a direct send was in its syscall. That sender is the last user of the send memory and the
    /// descriptor: when the syscall returns, it releases the memory, completes the output and closes the descriptor.
    /// </summary>
    DirectSendOutlivedRing,

    /// <summary>The send loop has ended: no send starts again and none is in flight, so the descriptor may close.</summary>
    Done,
}

/// <summary>
/// The send direction of one connection: a loop that drains the output pipe, one send at a time.
/// <para>
/// With direct sends (<see cref="SendPathMode.Direct"/>) the output pipe resumes the loop on a pool thread
/// (<see cref="FlushingThreadScheduler"/>: inline in the flush for the first flush of a work item, from the pool's
/// global queue for the flushes that follow, so flushes in a row leave in one send), and that thread sends with a
/// non-blocking send(2) on the socket's ordinary descriptor, as the Sockets transport does. In a burst, when more of
/// the ring's application work is already queued for the pool (<see cref="ApplicationDispatch.MoreWorkQueued"/>), the
/// flushing thread hands the loop to the ring instead: the ring sends in its next submission, together with that
/// work's responses, one io_uring_enter and one wake-up of the peer for the burst instead of a send(2) each. What the kernel does not take (a full socket buffer: EAGAIN or
/// a partial send) moves the loop to the ring thread, which sends the rest through the ring and keeps sending through
/// the ring while more is already waiting; once the output is drained, the next flush sends directly again. An error
/// moves the loop to the ring thread too, where it is classified exactly like a ring send's. Zero-copy sends always
/// take the ring. With <see cref="SendPathMode.Ring"/> or inline scheduling the loop runs on the ring thread only.
/// </para>
/// <para>
/// Threads: the loop runs on one thread at a time (the pipe has one reader, and the loop hands itself over through
/// the pipe's scheduler or the ring's queue, both of which order memory), so the loop's members below need no locks.
/// The ring thread reads <see cref="State"/> to decide whether the descriptor may close: the close waits for
/// <see cref="SenderState.Done"/>, which only the ring thread sets, after the last direct send has returned — so a
/// direct send can never use a closed or reused descriptor.
/// </para>
/// </summary>
internal sealed partial class ConnectionSender : IValueTaskSource<int>
{
    // One vectored send takes up to 256 pool blocks (1 MiB of 4 KiB blocks): a large response goes out in one
    // sendmsg, as with the Sockets transport, instead of one round trip per 128 KiB.
    private const int MaxSendSegments = 256;
    private const int DirectSendFlags = LinuxSyscalls.MsgDontWait | LinuxSyscalls.MsgNoSignal;

    // ---- set at construction; any thread ----
    private readonly IoUringConnection _connection;
    private readonly RingThread _ring;
    private readonly IoUringTransportContext _context;
    private readonly PipeReader _output;
    private readonly int _fd;          // the ordinary descriptor: direct sends use it, ring sends without a registered slot too
    private readonly int _fixedSlot;   // the registered-file slot ring sends use, or -1
    private readonly ulong _sendUserData;
    private readonly ulong _cancelUserData;
    private readonly bool _pipeZeroCopyAllowed; // see ZeroCopyPolicy.AllowsPipeMemory

    // ---- the loop's: only the thread running the loop (a flushing thread or the ring thread) ----
    private MemoryHandle _singlePin;
    private MemoryHandle[]? _segmentPins;
    private int _segmentPinCount;
    private unsafe MsgHdr* _message; // followed by MaxSendSegments iovecs, allocated on the first vectored send

    // ---- ring thread: ring sends are prepared and completed there ----
    private ManualResetValueTaskSourceCore<int> _ringSend;
    private int _ringSendResult;
    private ulong _arenaSendUserData; // the arena SEND_ZC in flight (its chunk in the generation bits), 0 when none

    // ---- written by the loop's thread, read by the ring thread (close, cancel); DirectSending is entered and left
    // with a compare-and-swap, which the failing ring also uses to hand the end to a direct send still running ----
    private volatile SenderState _state;

    // ---- written by the ring thread (Stop), read by a flushing thread before each direct send ----
    private volatile bool _stopRequested;

    public ConnectionSender(IoUringConnection connection, RingThread ring, PipeReader output, int fd, int fixedSlot,
        ulong sendUserData, ulong cancelUserData, bool pipeZeroCopyAllowed)
    {
        _connection = connection;
        _ring = ring;
        _context = ring.Context;
        _output = output;
        _fd = fd;
        _fixedSlot = fixedSlot;
        _sendUserData = sendUserData;
        _cancelUserData = cancelUserData;
        _pipeZeroCopyAllowed = pipeZeroCopyAllowed;
        _ringSend.RunContinuationsAsynchronously = false; // a ring send's completion resumes the loop inline on the ring thread
    }

    public SenderState State => _state;

    /// <summary>True once the loop has ended and nothing it sent is still in the kernel's hands (ring thread).</summary>
    public bool IsDone => State == SenderState.Done;

    /// <summary>
    /// True while a zero-copy send of pipe memory is in the kernel or its pages still are: the notification that
    /// frees them needs the peer's acknowledgement, or the socket's send queue dropped (ring thread).
    /// </summary>
    public bool KernelHoldsZeroCopyPages => State is SenderState.ZeroCopySending or SenderState.AwaitingZeroCopyNotification;

    /// <summary>The user_data of the SEND_ZC from the registered arena in the kernel, 0 when none (ring thread; tests).</summary>
    internal ulong ArenaSendUserData => _arenaSendUserData;

    /// <summary>The vectored-send header is allocated (tests: it must outlive any send that uses it).</summary>
    internal unsafe bool MessageAllocated => _message is not null;

    /// <summary>Pool segments pinned for the send in progress (tests).</summary>
    internal int PinnedSegments => _segmentPinCount;

    private int IoFd => _fixedSlot >= 0 ? _fixedSlot : _fd;

    private bool IoFixed => _fixedSlot >= 0;

    // ================================================================================================================
    // The loop
    // ================================================================================================================

    /// <summary>Starts on the ring thread; ends on it, handing the outcome to the connection.</summary>
    public async Task RunAsync()
    {
        Exception? shutdownReason = null;
        Exception? unexpectedError = null;
        Exception? loopFault = null;
        try
        {
            while (true)
            {
                ReadResult result = await _output.ReadAsync();
                if (result.IsCanceled)
                {
                    break;
                }

                ReadOnlySequence<byte> buffer = result.Buffer;
                if (buffer.IsEmpty)
                {
                    _output.AdvanceTo(buffer.End);
                    if (result.IsCompleted)
                    {
                        break;
                    }
                    continue;
                }

                int sent;
                if (_ring.IsOwnerThread)
                {
                    sent = await SendThroughRingAsync(buffer);
                }
                else if (_ring.ApplicationDispatch is { MoreWorkQueued: true })
                {
                    // More of this ring's application work is about to run on the pool: this response goes out with
                    // theirs, in the ring's next submission (the ring thread is woken by the eventfd, once per burst).
                    _output.AdvanceTo(buffer.Start);
                    await _ring.SwitchTo();
                    continue;
                }
                else
                {
                    // A flushing thread: the kernel takes what fits in the socket buffer right now.
                    sent = _ring.Ring.Faults is { } faults ? faults.DirectSend(buffer, TrySendDirectly) : TrySendDirectly(buffer);
                    if (sent == EndedByRingFailure)
                    {
                        return; // the ring failed meanwhile and this thread has ended the send direction
                    }
                    if (sent == buffer.Length)
                    {
                        _output.AdvanceTo(buffer.End);
                        if (result.IsCompleted)
                        {
                            break;
                        }
                        continue;
                    }

                    // A partial send, EAGAIN, or an error: the ring thread takes over. The unsent rest stays in the
                    // pipe (examined up to where we got), so the next read there returns it at once.
                    _output.AdvanceTo(sent > 0 ? buffer.GetPosition(sent) : buffer.Start);
                    await _ring.SwitchTo();
                    if (sent >= 0)
                    {
                        continue;
                    }
                }

                if (sent < 0)
                {
                    // After a stop, a failed send is the stop's doing (a cancel, or the reset of an abort): not the peer's.
                    (shutdownReason, unexpectedError) = _connection.ClassifySendError(_stopRequested ? Errno.ECANCELED : -sent);
                    break;
                }
                _output.AdvanceTo(buffer.GetPosition(sent));
                if (sent < buffer.Length)
                {
                    continue; // a partial ring send: the rest comes back from ReadAsync at once
                }
                if (result.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (Exception e)
        {
            shutdownReason = unexpectedError = loopFault = e; // logged in the tail, where a throwing logger cannot strand the loop
        }

        // Ending touches ring-thread state (shutdown, close); it is also where Done is set, so the descriptor
        // cannot close before this point.
        await _ring.SwitchTo();
        End(shutdownReason, unexpectedError, loopFault);
    }

    /// <summary>
    /// Ring thread: the loop's tail. Done comes first, and a throw in the rest (a logger, a listener) still ends the
    /// connection, contained, instead of vanishing into the loop's task, which nobody awaits.
    /// </summary>
    private void End(Exception? shutdownReason, Exception? unexpectedError, Exception? loopFault)
    {
        _state = SenderState.Done;
        try
        {
            if (loopFault is not null)
            {
                _connection.OnSendLoopError(loopFault);
            }
            FreeMessage();
            _output.Complete(unexpectedError);
            _connection.OnSendsEnded(shutdownReason);
        }
        catch (Exception e) when (!RingThread.IsFatal(e, _ring.Ring))
        {
            _connection.FailContained(e);
            _connection.MaybeClose();
        }
    }

    /// <summary>Ring thread: no new send starts; a ring send in flight is cancelled and the loop ends at its next read.</summary>
    public void Stop()
    {
        if (IsDone)
        {
            return;
        }
        _stopRequested = true;
        CancelRingSend();
        _output.CancelPendingRead();
    }

    /// <summary>A send of this size goes zero-copy: from the registered arena if the ring has one, else from pipe memory where allowed.</summary>
    private bool IsZeroCopySize(long length)
    {
        int threshold = _context.Options.ZeroCopySendThreshold;
        return threshold > 0 && length >= threshold && _ring.ZeroCopyEnabled && (_pipeZeroCopyAllowed || _ring.SendArena is not null);
    }

    // ================================================================================================================
    // Ring sends (ring thread)
    // ================================================================================================================

    /// <summary>Sends a prefix of <paramref name="buffer"/> through the ring; completes with the bytes the kernel took or -errno.</summary>
    private unsafe ValueTask<int> SendThroughRingAsync(in ReadOnlySequence<byte> buffer)
    {
        _ringSend.Reset();
        _context.Metrics.RingSends.Add(1);
        bool zeroCopy = IsZeroCopySize(buffer.Length);

        if (zeroCopy && _ring.SendArena is { } arena && arena.TryRent(out int chunk, out byte* chunkMemory))
        {
            // Copy into registered memory and send that: the kernel pins nothing per send, and the notification's
            // bookkeeping moves to the ring, so the next send needs no wait for this one's notification.
            int length = (int)Math.Min(buffer.Length, arena.ChunkSize);
            buffer.Slice(0, length).CopyTo(new Span<byte>(chunkMemory, length));
            IoUringSqe* arenaSqe = _ring.Ring.GetSqe();
            _arenaSendUserData = UserData.Encode(OperationKind.ArenaSend, (uint)chunk, _connection.Slot);
            SqePreparation.PrepareSendZeroCopy(arenaSqe, IoFd, IoFixed, chunkMemory, (uint)length,
                _arenaSendUserData, reportUsage: true, RegisteredBufferArena.BufferIndex);
            _state = SenderState.RingSending;
            return new ValueTask<int>(this, _ringSend.Version);
        }

        zeroCopy &= _pipeZeroCopyAllowed; // no arena chunk: pipe memory goes zero-copy only where allowed
        IoUringSqe* sqe = _ring.Ring.GetSqe();
        if (buffer.IsSingleSegment)
        {
            ReadOnlyMemory<byte> memory = buffer.First;
            _singlePin = memory.Pin();
            if (zeroCopy)
            {
                SqePreparation.PrepareSendZeroCopy(sqe, IoFd, IoFixed, (byte*)_singlePin.Pointer, (uint)memory.Length, _sendUserData);
            }
            else
            {
                SqePreparation.PrepareSend(sqe, IoFd, IoFixed, (byte*)_singlePin.Pointer, (uint)memory.Length, _sendUserData);
            }
        }
        else
        {
            PrepareMessage(buffer);
            if (zeroCopy)
            {
                SqePreparation.PrepareSendMessageZeroCopy(sqe, IoFd, IoFixed, _message, _sendUserData);
            }
            else
            {
                SqePreparation.PrepareSendMessage(sqe, IoFd, IoFixed, _message, _sendUserData);
            }
        }
        _state = zeroCopy ? SenderState.ZeroCopySending : SenderState.RingSending;
        return new ValueTask<int>(this, _ringSend.Version);
    }

    /// <summary>A completion of this connection's ring send (ring thread).</summary>
    public void OnSendCompleted(in IoUringCqe cqe)
    {
        if (cqe.IsNotification)
        {
            // SEND_ZC's second CQE: the kernel no longer reads the buffer, so it may go back to the pool.
            _ring.OnZeroCopyNotification(((uint)cqe.Result & IoUringValues.NotifUsageZcCopied) != 0);
            if (_state == SenderState.AwaitingZeroCopyNotification)
            {
                CompleteRingSend();
            }
            return;
        }

        _ringSendResult = cqe.Result;
        if (_state == SenderState.ZeroCopySending && cqe.HasMore)
        {
            _state = SenderState.AwaitingZeroCopyNotification;
            return;
        }
        CompleteRingSend();
    }

    private void CompleteRingSend()
    {
        ReleasePins();
        _arenaSendUserData = 0;
        _state = SenderState.Idle;
        try
        {
            if (_ringSendResult > 0)
            {
                _context.Metrics.BytesSent.Add(_ringSendResult);
            }
        }
        finally
        {
            // Even when a listener throws (the connection then fails, contained), the loop resumes to see its stop:
            // a loop left waiting here would keep the connection half-closed for ever.
            _ringSend.SetResult(_ringSendResult); // resumes the loop inline, here on the ring thread
        }
    }

    private unsafe void CancelRingSend()
    {
        if (_state is not (SenderState.RingSending or SenderState.ZeroCopySending))
        {
            return;
        }
        IoUringSqe* sqe = _ring.Ring.GetSqe();
        // An arena send carries its own user_data (the chunk travels in it): a cancel of the connection's would miss it.
        SqePreparation.PrepareCancel(sqe, _arenaSendUserData != 0 ? _arenaSendUserData : _sendUserData, _cancelUserData);
        sqe->Flags |= SqeFlags.CqeSkipSuccess;
    }

    // ================================================================================================================
    // Vectored sends (the loop's thread)
    // ================================================================================================================

    private unsafe void PrepareMessage(in ReadOnlySequence<byte> buffer)
    {
        if (_message is null)
        {
            _message = (MsgHdr*)NativeMemory.AllocZeroed((nuint)(sizeof(MsgHdr) + MaxSendSegments * sizeof(IoVec)));
            _segmentPins = new MemoryHandle[MaxSendSegments];
        }
        IoVec* iov = (IoVec*)(_message + 1);
        int count = 0;
        foreach (ReadOnlyMemory<byte> segment in buffer)
        {
            if (segment.IsEmpty)
            {
                continue;
            }
            if (count == MaxSendSegments)
            {
                break; // the rest goes in the next send
            }
            MemoryHandle pin = segment.Pin();
            _segmentPins![count] = pin;
            iov[count].Base = pin.Pointer;
            iov[count].Length = (nuint)segment.Length;
            count++;
        }
        _segmentPinCount = count;
        *_message = default;
        _message->Iov = iov;
        _message->IovLength = (nuint)count;
    }

    private unsafe void FreeMessage()
    {
        if (_message is not null)
        {
            NativeMemory.Free(_message);
            _message = null;
        }
    }

    private void ReleasePins()
    {
        _singlePin.Dispose();
        _singlePin = default;
        for (int i = 0; i < _segmentPinCount; i++)
        {
            _segmentPins![i].Dispose();
            _segmentPins[i] = default;
        }
        _segmentPinCount = 0;
    }

    int IValueTaskSource<int>.GetResult(short token) => _ringSend.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<int>.GetStatus(short token) => _ringSend.GetStatus(token);

    void IValueTaskSource<int>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
        => _ringSend.OnCompleted(continuation, state, token, flags);
}
