using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// The listeners' accepts that one ring does. Each acceptor is one multishot accept, armed only while the descriptor
/// budget has room for a whole backlog (a multishot accept takes everything in the backlog before a single
/// completion is seen), else one accept per connection. Out of descriptors, accepting pauses for 100 ms (a timeout in
/// the ring, no spinning); a limit watch notices a lowered RLIMIT_NOFILE (RingAcceptors.LimitWatch.cs). Each
/// acceptor's state is an <see cref="AcceptorState"/>. Accepted descriptors go to the ring's connection hand-off.
/// Ring-thread only.
/// </summary>
internal sealed unsafe partial class RingAcceptors : IDisposable
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
        var acceptor = new Acceptor(listener, _acceptors.Count, _owner);
        if (!listener.AddAcceptor(_owner, acceptor))
        {
            acceptor.OnStopping();
            acceptor.TryFinish();
            return null;
        }
        _acceptors.Add(acceptor);
        Arm(acceptor);
        return acceptor;
    }

    /// <summary>How long accepting waits out a shortage of descriptors (100 ms; tests lengthen it to see who ends a pause).</summary>
    internal TimeSpan PauseDuration
    {
        set => (_pauseTimespec->Seconds, _pauseTimespec->Nanoseconds) = ((long)value.TotalSeconds, value.Ticks % TimeSpan.TicksPerSecond * 100);
    }

    /// <summary>This ring's live acceptor for <paramref name="listener"/>, if any.</summary>
    internal Acceptor? AcceptorOf(IoUringConnectionListener listener) => _acceptors.Find(a => a?.Listener == listener);

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
            if (acceptor is not null && !acceptor.IsStopping)
            {
                acceptor.OnStopping(); // nothing is cancelled: the ring's end takes all it holds
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

    /// <summary>Cancels all the acceptor holds in the kernel (accept, pause, watch) in any state; it is finished when the kernel confirms.</summary>
    public void Stop(Acceptor acceptor)
    {
        if (acceptor.IsStopping)
        {
            return;
        }
        AcceptorState was = acceptor.State;
        acceptor.OnStopping();
        if (was is AcceptorState.ArmedMultishot or AcceptorState.ArmedSingle)
        {
            Cancel(acceptor.UserData, acceptor);
        }
        if (was is AcceptorState.CancellingForPause or AcceptorState.Paused)
        {
            Cancel(acceptor.PauseUserData, acceptor); // the accept's cancel, if any, is already on its way
        }
        if (acceptor.Watching)
        {
            Cancel(acceptor.WatchUserData, acceptor);
        }
        MaybeFinish(acceptor);
    }

    /// <summary>Cancels the acceptor's request <paramref name="target"/>; its own completion (ECANCELED) tells the outcome, so the cancel's success is not reported.</summary>
    private void Cancel(ulong target, Acceptor acceptor)
    {
        IoUringSqe* sqe = _ring.GetSqe();
        SqePreparation.PrepareCancel(sqe, target, acceptor.CancelUserData);
        sqe->Flags |= SqeFlags.CqeSkipSuccess;
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
        bool multishot = HasRoomForMultishotAccept;
        if (multishot)
        {
            SqePreparation.PrepareMultishotAccept(sqe, acceptor.Listener.ListenFd, acceptor.UserData);
        }
        else
        {
            SqePreparation.PrepareAccept(sqe, acceptor.Listener.ListenFd, acceptor.UserData);
        }
        acceptor.OnArmed(multishot);
        if (multishot && !acceptor.Watching)
        {
            Watch(acceptor);
        }
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
                AcceptedDescriptor.Refuse(cqe.Result); // its acceptor has finished: nobody will serve it
            }
            return;
        }
        if (UserData.KindOf(cqe.UserData) == OperationKind.Accept)
        {
            OnAcceptCompleted(acceptor, cqe);
        }
        else if (UserData.GenerationOf(cqe.UserData) == Acceptor.WatchMarker)
        {
            OnWatchExpired(acceptor);
        }
        else
        {
            OnPauseEnded(acceptor);
        }
        MaybeFinish(acceptor);
    }

    /// <summary>The pause is over (or was cancelled by a stop): accept again unless still out of descriptors.</summary>
    private void OnPauseEnded(Acceptor acceptor)
    {
        acceptor.OnPauseEnded();
        if (acceptor.State != AcceptorState.Idle)
        {
            return; // stopping, or the accept the pause cancelled has yet to end (its end arms again)
        }
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

    private void OnAcceptCompleted(Acceptor acceptor, in IoUringCqe cqe)
    {
        if (!cqe.HasMore)
        {
            acceptor.OnAcceptEnded();
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
                AcceptedDescriptor.Refuse(res);
                Pause(acceptor, ExhaustedReason());
                return;
            }
            _owner.OnAccepted(acceptor, res);
            if (descriptors.IsExhausted)
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

        if (acceptor.State == AcceptorState.Idle)
        {
            Arm(acceptor, budgetRefreshed);
        }
    }

    private string ExhaustedReason()
        => $"{_context.Descriptors.Open} connections are open and RLIMIT_NOFILE is {_context.Descriptors.Limit}: the rest is kept for the runtime and the application";

    /// <summary>Cancels the acceptor's accept, if armed, and retries after 100 ms (a timeout in the ring, no spinning). Idle or armed only; else nothing to do.</summary>
    internal void Pause(Acceptor acceptor, string? reason)
    {
        if (acceptor.State is not (AcceptorState.Idle or AcceptorState.ArmedMultishot or AcceptorState.ArmedSingle))
        {
            return; // already pausing, or stopping
        }
        if (reason is not null)
        {
            _owner.Metrics.AcceptPauses.Add(1);
            _context.Log.AcceptPaused(acceptor.Listener.EndPoint, reason);
        }
        if (acceptor.State != AcceptorState.Idle)
        {
            Cancel(acceptor.UserData, acceptor);
        }
        acceptor.OnPaused();
        IoUringSqe* sqe = _ring.GetSqe();
        SqePreparation.PrepareTimeout(sqe, _pauseTimespec, acceptor.PauseUserData);
    }

    private void MaybeFinish(Acceptor acceptor)
    {
        if (acceptor.TryFinish())
        {
            _acceptors[acceptor.Index] = null;
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
}
