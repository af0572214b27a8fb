using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// The listeners' accepts that one ring does. Each acceptor is one multishot accept, armed only while the descriptor
/// budget has room for a whole backlog (a multishot accept takes everything in the backlog before a single
/// completion is seen), else one accept per connection. Out of descriptors, accepting pauses for 100 ms (a timeout in
/// the ring, no spinning). An operator can lower RLIMIT_NOFILE at any time without a connection arriving: once a
/// second, while a multishot accept is armed, the limit is read again, and if the room is gone the multishot accept
/// gives way to one accept at a time. Accepted descriptors go to the ring's connection hand-off. Ring-thread only.
/// </summary>
internal sealed unsafe class RingAcceptors : IDisposable
{
    private readonly RingThread _owner;
    private readonly Ring _ring;
    private readonly IoUringTransportContext _context;
    private readonly List<Acceptor?> _acceptors = new();
    private KernelTimespec* _pauseTimespec;
    private KernelTimespec* _watchTimespec;

    public RingAcceptors(RingThread owner, Ring ring, IoUringTransportContext context)
    {
        _owner = owner;
        _ring = ring;
        _context = context;
        _pauseTimespec = (KernelTimespec*)NativeMemory.AllocZeroed((nuint)sizeof(KernelTimespec));
        _pauseTimespec->Nanoseconds = 100_000_000; // 100 ms between retries when accept runs out of descriptors
        _watchTimespec = (KernelTimespec*)NativeMemory.AllocZeroed((nuint)sizeof(KernelTimespec));
        _watchTimespec->Seconds = 1;
    }

    /// <summary>Makes this ring accept for <paramref name="listener"/>; null when the listener is unbinding (nothing to accept for).</summary>
    public Acceptor? Add(IoUringConnectionListener listener)
    {
        var acceptor = new Acceptor(listener, _acceptors.Count);
        if (!listener.AddAcceptor(_owner, acceptor))
        {
            acceptor.Finished.TrySetResult();
            return null;
        }
        _acceptors.Add(acceptor);
        Arm(acceptor);
        return acceptor;
    }

    /// <summary>Stops every acceptor (the ring is stopping).</summary>
    public void StopAll()
    {
        foreach (var acceptor in _acceptors)
        {
            if (acceptor is not null)
            {
                Stop(acceptor);
            }
        }
    }

    /// <summary>The ring has failed: each acceptor's listener accepts on a live ring instead; nothing here re-arms.</summary>
    public void MoveToLiveRings()
    {
        foreach (var acceptor in _acceptors)
        {
            if (acceptor is not null && !acceptor.Stopped)
            {
                acceptor.Stopped = true;
                acceptor.Listener.MoveAcceptor(_owner, acceptor);
            }
        }
    }

    /// <summary>The ring is closed: whatever was in the kernel is gone with it.</summary>
    public void FinishAll()
    {
        foreach (var acceptor in _acceptors)
        {
            acceptor?.Finished.TrySetResult();
        }
    }

    public void Dispose()
    {
        NativeMemory.Free(_pauseTimespec);
        _pauseTimespec = null;
        NativeMemory.Free(_watchTimespec);
        _watchTimespec = null;
    }

    /// <summary>Cancels the acceptor's accept, pause and watch; it is finished when the kernel confirms.</summary>
    public void Stop(Acceptor acceptor)
    {
        if (acceptor.Stopped)
        {
            return;
        }
        acceptor.Stopped = true;
        if (acceptor.Armed)
        {
            IoUringSqe* sqe = _ring.GetSqe();
            SqePreparation.PrepareCancel(sqe, acceptor.UserData, UserData.Encode(OperationKind.Cancel, 0, acceptor.Index));
        }
        else if (acceptor.Paused)
        {
            IoUringSqe* sqe = _ring.GetSqe();
            SqePreparation.PrepareCancel(sqe, acceptor.PauseUserData, UserData.Encode(OperationKind.Cancel, 0, acceptor.Index));
        }
        StopWatch(acceptor);
        MaybeFinish(acceptor);
    }

    /// <summary>Arms the acceptor's accept: multishot while the budget has room for a whole backlog, else single.</summary>
    /// <param name="acceptor">The acceptor to arm.</param>
    /// <param name="budgetRefreshed">The caller has just refreshed the descriptor budget (once per completion is enough).</param>
    private void Arm(Acceptor acceptor, bool budgetRefreshed = false)
    {
        IoUringSqe* sqe = _ring.GetSqe();
        // A multishot accept takes everything in the backlog before we see a single completion, so it could run
        // the process out of descriptors. Near the budget, accept one connection per SQE instead.
        if (!budgetRefreshed)
        {
            _context.Descriptors.Refresh();
        }
        acceptor.Multishot = HasRoomForMultishotAccept;
        if (acceptor.Multishot)
        {
            SqePreparation.PrepareMultishotAccept(sqe, acceptor.Listener.ListenFd, acceptor.UserData);
            Watch(acceptor);
        }
        else
        {
            SqePreparation.PrepareAccept(sqe, acceptor.Listener.ListenFd, acceptor.UserData);
        }
        acceptor.Armed = true;
    }

    /// <summary>An accept or timeout completion of one of this ring's acceptors.</summary>
    public void OnCompleted(in IoUringCqe cqe)
    {
        int index = UserData.SlotOf(cqe.UserData);
        Acceptor? acceptor = index < _acceptors.Count ? _acceptors[index] : null;
        if (acceptor is null)
        {
            if (UserData.KindOf(cqe.UserData) == OperationKind.Accept && cqe.Result >= 0)
            {
                LinuxSyscalls.Close(cqe.Result);
            }
            return;
        }

        if (UserData.KindOf(cqe.UserData) == OperationKind.Timeout && UserData.GenerationOf(cqe.UserData) == Acceptor.WatchMarker)
        {
            OnWatchExpired(acceptor);
            return;
        }
        if (UserData.KindOf(cqe.UserData) == OperationKind.Timeout)
        {
            // The pause is over (or was cancelled by unbind): accept again unless still out of descriptors.
            acceptor.Paused = false;
            if (!acceptor.Stopped)
            {
                _context.Descriptors.Refresh();
                if (_context.Descriptors.IsExhausted)
                {
                    Pause(acceptor, reason: null); // still exhausted: wait again, without logging again
                }
                else
                {
                    Arm(acceptor, budgetRefreshed: true);
                }
            }
            MaybeFinish(acceptor);
            return;
        }

        if (!cqe.HasMore)
        {
            acceptor.Armed = false;
        }

        int res = cqe.Result;
        bool budgetRefreshed = false;
        if (res >= 0)
        {
            var descriptors = _context.Descriptors;
            descriptors.Refresh(); // the limit may have been lowered since the last accept
            budgetRefreshed = true; // the connection accepted below is accounted at once: still fresh for re-arming
            if (descriptors.Remaining < 0)
            {
                // Into the reserve the runtime and the application need (the limit was lowered, or a multishot
                // accept took a whole backlog at once): give this one back at once, as a full listener would.
                SocketOptions.SetLingerZero(res);
                LinuxSyscalls.Close(res);
                Pause(acceptor, ExhaustedReason());
                MaybeFinish(acceptor);
                return;
            }
            _owner.OnAccepted(acceptor, res);
            if (descriptors.IsExhausted && !acceptor.Stopped)
            {
                Pause(acceptor, ExhaustedReason());
                return;
            }
        }
        else if (res == -Errno.EMFILE || res == -Errno.ENFILE || res == -Errno.ENOMEM || res == -Errno.ENOBUFS)
        {
            // Out of descriptors or memory: stop accepting for a moment instead of spinning on the same error;
            // established connections carry on, and the backlog waits in the kernel. Something else took
            // descriptors: count them again.
            _context.Descriptors.Refresh(forceCount: true);
            Pause(acceptor, Errno.Name(res));
            return;
        }
        // ECANCELED (unbind), ECONNABORTED (a connection reset in the backlog) and the like: nothing to hand out.

        if (!acceptor.Armed && !acceptor.Stopped && !acceptor.Paused)
        {
            Arm(acceptor, budgetRefreshed);
        }
        MaybeFinish(acceptor);
    }

    private string ExhaustedReason()
        => $"{_context.Descriptors.Open} connections are open and RLIMIT_NOFILE is {_context.Descriptors.Limit}: the rest is kept for the runtime and the application";

    /// <summary>Cancels the acceptor's multishot accept and retries after 100 ms (a timeout in the ring, no spinning).</summary>
    private void Pause(Acceptor acceptor, string? reason)
    {
        if (acceptor.Paused || acceptor.Stopped)
        {
            return;
        }
        if (reason is not null)
        {
            _owner.Metrics.AcceptPauses.Add(1);
            _context.Log.AcceptPaused(acceptor.Listener.EndPoint, reason);
        }
        if (acceptor.Armed)
        {
            IoUringSqe* cancel = _ring.GetSqe();
            SqePreparation.PrepareCancel(cancel, acceptor.UserData, UserData.Encode(OperationKind.Cancel, 0, acceptor.Index));
            cancel->Flags |= SqeFlags.CqeSkipSuccess;
        }
        acceptor.Paused = true;
        IoUringSqe* sqe = _ring.GetSqe();
        SqePreparation.PrepareTimeout(sqe, _pauseTimespec, acceptor.PauseUserData);
    }

    private void MaybeFinish(Acceptor acceptor)
    {
        if (acceptor.Stopped && !acceptor.InKernel)
        {
            _acceptors[acceptor.Index] = null;
            acceptor.Finished.TrySetResult();
        }
    }

    /// <summary>The kernel holds a request of some acceptor here: the loop may not end yet.</summary>
    public bool AnyInKernel()
    {
        foreach (var a in _acceptors)
        {
            if (a is not null && a.InKernel)
            {
                return true;
            }
        }
        return false;
    }


    /// <summary>The budget, as last refreshed, leaves room for a multishot accept taking a whole backlog at once.</summary>
    private bool HasRoomForMultishotAccept => _context.Descriptors.Remaining > _context.Options.Backlog + 64;

    private void Watch(Acceptor acceptor)
    {
        if (acceptor.Watching)
        {
            return;
        }
        IoUringSqe* sqe = _ring.GetSqe();
        SqePreparation.PrepareTimeout(sqe, _watchTimespec, acceptor.WatchUserData);
        acceptor.Watching = true;
    }

    private void StopWatch(Acceptor acceptor)
    {
        if (acceptor.Watching)
        {
            IoUringSqe* sqe = _ring.GetSqe();
            SqePreparation.PrepareCancel(sqe, acceptor.WatchUserData, UserData.Encode(OperationKind.Cancel, 0, acceptor.Index));
            sqe->Flags |= SqeFlags.CqeSkipSuccess;
        }
    }

    private void OnWatchExpired(Acceptor acceptor)
    {
        acceptor.Watching = false;
        if (acceptor.Stopped || !acceptor.Armed || !acceptor.Multishot)
        {
            MaybeFinish(acceptor); // nothing multishot to watch any more
            return;
        }
        _context.Descriptors.Refresh(); // the operator may have lowered the limit with no connection arriving
        if (HasRoomForMultishotAccept)
        {
            Watch(acceptor);
            return;
        }
        // The room is gone: end the multishot accept; its last completion re-arms it one connection at a time.
        _context.Log.AcceptingOneAtATime(acceptor.Listener.EndPoint, _context.Descriptors.Limit, _context.Descriptors.Open);
        IoUringSqe* cancel = _ring.GetSqe();
        SqePreparation.PrepareCancel(cancel, acceptor.UserData, UserData.Encode(OperationKind.Cancel, 0, acceptor.Index));
        cancel->Flags |= SqeFlags.CqeSkipSuccess;
        acceptor.Multishot = false;
    }
}
