using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// Closes connections' sockets with one hard-linked chain each: SHUTDOWN (the FIN, when asked) → CLOSE_DIRECT of the
/// registered slot → CLOSE of the descriptor. Hard links keep the order even when a step fails (SHUTDOWN of a reset
/// socket), so a SHUTDOWN on an io-wq worker can never race the close. A chain goes to the kernel whole or not at
/// all: when the SQ lacks room for all of it even after a submit (SQPOLL can leave the SQ full), the chain waits for
/// the next loop turn. The registered slot is reused, and the descriptor's place in the budget given back, only
/// when the kernel reports the close done. Ring-thread only.
/// </summary>
internal sealed unsafe class CloseChains(Ring ring, FixedFileTable? files, DescriptorBudget descriptors)
{
    private const uint CloseFdMarker = 0, CloseDirectMarker = 1;

    private readonly Queue<Request> _deferred = new();

    /// <summary>Chains prepared or waiting whose CLOSE has not completed: the loop may not end before.</summary>
    public int Pending { get; private set; }

    /// <summary>Chains waiting for room in the SQ.</summary>
    public int Deferred => _deferred.Count;

    /// <summary>Chains prepared for (or submitted to) the kernel whose CLOSE has not completed.</summary>
    public int InKernel => Pending - _deferred.Count;

    /// <summary>Closes <paramref name="fd"/> (and empties <paramref name="fixedSlot"/> when ≥ 0), with a FIN first when <paramref name="sendFin"/>.</summary>
    public void Close(int fd, int fixedSlot, bool sendFin)
    {
        Pending++;
        var request = new Request(fd, fixedSlot, sendFin);
        if (_deferred.Count > 0 || !TryPrepare(request))
        {
            _deferred.Enqueue(request); // in order, behind the chains already waiting
        }
    }

    /// <summary>Prepares the chains that had to wait, as far as the SQ has room for whole chains.</summary>
    public void PrepareDeferred()
    {
        while (_deferred.TryPeek(out Request request) && TryPrepare(request))
        {
            _deferred.Dequeue();
        }
    }

    /// <summary>A CLOSE or CLOSE_DIRECT completed.</summary>
    public void OnCompleted(in IoUringCqe cqe)
    {
        if (UserData.GenerationOf(cqe.UserData) == CloseDirectMarker)
        {
            files!.Release(UserData.SlotOf(cqe.UserData));
        }
        else
        {
            Pending--;
            descriptors.OnClosed(); // the descriptor is really gone now
        }
    }

    /// <summary>
    /// The ring failed: the chains still waiting for room never reach the kernel, so their descriptors are closed here
    /// (a FIN or RST as each socket's linger says, once the ring's fixed table lets go of it) and their places in the
    /// budget given back. Safe because the kernel never saw them.
    /// </summary>
    public void CloseDeferredAfterRingFailure()
    {
        while (_deferred.TryDequeue(out Request request))
        {
            LinuxSyscalls.Close(request.Fd);
            Pending--;
            descriptors.OnClosed();
        }
    }

    private bool TryPrepare(in Request request)
    {
        int length = 1 + (request.SendFin ? 1 : 0) + (request.FixedSlot >= 0 ? 1 : 0);
        if (ring.SubmissionSpaceLeft < length)
        {
            ring.Submit();
            if (ring.SubmissionSpaceLeft < length)
            {
                return false;
            }
        }

        IoUringSqe* sqe;
        if (request.SendFin)
        {
            sqe = ring.GetSqe();
            bool useFixed = request.FixedSlot >= 0;
            SqePreparation.PrepareShutdown(sqe, useFixed ? request.FixedSlot : request.Fd, useFixed, LinuxSyscalls.ShutRdWr, UserData.Encode(OperationKind.Shutdown, 0, 0));
            sqe->Flags |= SqeFlags.IoHardLink | SqeFlags.CqeSkipSuccess;
        }
        if (request.FixedSlot >= 0)
        {
            sqe = ring.GetSqe();
            SqePreparation.PrepareCloseDirect(sqe, request.FixedSlot, UserData.Encode(OperationKind.Close, CloseDirectMarker, request.FixedSlot));
            sqe->Flags |= SqeFlags.IoHardLink;
        }
        sqe = ring.GetSqe();
        SqePreparation.PrepareClose(sqe, request.Fd, UserData.Encode(OperationKind.Close, CloseFdMarker, 0));
        return true;
    }

    private readonly record struct Request(int Fd, int FixedSlot, bool SendFin);
}
