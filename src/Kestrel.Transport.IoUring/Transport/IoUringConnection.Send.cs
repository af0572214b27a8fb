using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;
using Microsoft.AspNetCore.Connections;

namespace Kestrel.Transport.IoUring.Transport;

// The send half of IoUringConnection: the output pipe drained by one send (or send_zc) in flight at a time.
internal sealed partial class IoUringConnection
{
    // ================================================================================================================
    // Send (ring thread)
    // ================================================================================================================

    private async Task ProcessSendsAsync()
    {
        Exception? shutdownReason = null;
        Exception? unexpectedError = null;
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
                if (!buffer.IsEmpty)
                {
                    int sent = await SendAsync(buffer);
                    if (sent < 0)
                    {
                        (shutdownReason, unexpectedError) = ClassifySendError(-sent);
                        break;
                    }
                    _output.AdvanceTo(buffer.GetPosition(sent));
                    if (sent < buffer.Length)
                    {
                        continue; // a partial send: the rest comes back from ReadAsync at once
                    }
                }
                else
                {
                    _output.AdvanceTo(buffer.End);
                }

                if (result.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (Exception e)
        {
            shutdownReason = unexpectedError = e;
            _log.ConnectionError(ConnectionId, e);
        }
        finally
        {
            _sendLoopDone = true;
            Shutdown(shutdownReason);
            _output.Complete(unexpectedError);
            if (_flushPending)
            {
                _input.CancelPendingFlush(); // un-pause a receive waiting on back-pressure
            }
            MaybeClose();
        }
    }

    private (Exception ShutdownReason, Exception? Unexpected) ClassifySendError(int errno)
    {
        var socketError = SocketErrors.FromErrno(errno);
        switch (errno)
        {
            case Errno.ECONNRESET:
            case Errno.EPIPE:
                _log.ConnectionReset(ConnectionId);
                return (new ConnectionResetException(socketError.Message, socketError), null);
            case Errno.ECANCELED:
            case Errno.EINTR:
            case Errno.EINVAL:
            case Errno.EBADF:
                return (_shutdownReason ?? socketError, null);
            default:
                _log.ConnectionError(ConnectionId, socketError);
                return (socketError, socketError);
        }
    }

    /// <summary>Sends a prefix of <paramref name="buffer"/>; completes with the bytes the kernel took or -errno.</summary>
    private unsafe ValueTask<int> SendAsync(in ReadOnlySequence<byte> buffer)
    {
        _sendSource.Reset();
        int threshold = _context.Options.ZeroCopySendThreshold;
        bool zeroCopy = _ring.ZeroCopyEnabled && buffer.Length >= threshold;

        if (zeroCopy && _ring.SendArena is { } arena && arena.TryRent(out int chunk, out byte* chunkMemory))
        {
            // Copy into registered memory and send that: the kernel pins nothing per send, and our notification
            // bookkeeping moves to the ring, so the next send needs no wait for this one's notification.
            int length = (int)Math.Min(buffer.Length, arena.ChunkSize);
            buffer.Slice(0, length).CopyTo(new Span<byte>(chunkMemory, length));
            IoUringSqe* arenaSqe = _ring.Ring.GetSqe();
            SqePreparation.PrepareSendZeroCopy(arenaSqe, IoFd, IoFixed, chunkMemory, (uint)length,
                UserData.Encode(OperationKind.ArenaSend, (uint)chunk, Slot), reportUsage: true, RegisteredBufferArena.BufferIndex);
            _sendInFlight = true;
            _zeroCopyInFlight = false;
            _zeroCopyResultSeen = false;
            _zeroCopyNotificationPending = false;
            return new ValueTask<int>(this, _sendSource.Version);
        }

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
        _sendInFlight = true;
        _zeroCopyInFlight = zeroCopy;
        _zeroCopyResultSeen = false;
        _zeroCopyNotificationPending = false;
        return new ValueTask<int>(this, _sendSource.Version);
    }

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

    public void OnSendCompleted(in IoUringCqe cqe)
    {
        if (cqe.IsNotification)
        {
            // SEND_ZC's second CQE: the kernel no longer reads the buffer, so it may go back to the pool.
            _zeroCopyNotificationPending = false;
            _ring.OnZeroCopyNotification(((uint)cqe.Result & IoUringValues.NotifUsageZcCopied) != 0);
            if (_zeroCopyResultSeen)
            {
                CompleteSend();
            }
            return;
        }

        _sendResult = cqe.Result;
        if (_zeroCopyInFlight && cqe.HasMore)
        {
            _zeroCopyResultSeen = true;
            _zeroCopyNotificationPending = true;
            return;
        }
        CompleteSend();
    }

    private void CompleteSend()
    {
        ReleasePins();
        _sendInFlight = false;
        _zeroCopyInFlight = false;
        if (_sendResult > 0)
        {
            _context.Metrics.BytesSent.Add(_sendResult);
        }
        _sendSource.SetResult(_sendResult); // resumes ProcessSendsAsync inline, here on the ring thread
        MaybeClose();
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

    private unsafe void CancelSend()
    {
        if (!_sendInFlight)
        {
            return;
        }
        IoUringSqe* sqe = _ring.Ring.GetSqe();
        SqePreparation.PrepareCancel(sqe, _sendUserData, _cancelUserData);
        sqe->Flags |= SqeFlags.CqeSkipSuccess;
    }

    int IValueTaskSource<int>.GetResult(short token) => _sendSource.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<int>.GetStatus(short token) => _sendSource.GetStatus(token);

    void IValueTaskSource<int>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
        => _sendSource.OnCompleted(continuation, state, token, flags);
}
