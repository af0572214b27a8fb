using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Transport;

// The loop of a ring's thread: run queued work, prepare what the turn needs, submit and wait in one io_uring_enter,
// reap and dispatch the completions; until the ring stops (or fails).
internal sealed unsafe partial class RingThread
{
    private void Run()
    {
        ApplySchedulingPolicy();
        try
        {
            Initialize();
        }
        catch (Exception e)
        {
            InheritedPolicyGuard.UnregisterRingThread();
            Cleanup();
            _started.TrySetException(e);
            _stopped.TrySetResult();
            return;
        }
        SetState(RingState.Running);
        _started.TrySetResult();

        try
        {
            Loop();
        }
        catch (Exception e)
        {
            try
            {
                FailRing(e);
            }
            catch (Exception teardownError)
            {
                _context.Log.WorkItemFailed(Index, teardownError);
            }
        }
        finally
        {
            InheritedPolicyGuard.UnregisterRingThread();
            TakeNoMoreWork();
            Cleanup();
            _stopped.TrySetResult();
        }
    }

    /// <summary>
    /// The loop has run its last turn: the ring is Stopped (unless it failed) and runs no more work. What was posted
    /// after that turn is abandoned here, and whatever is posted from now on by <see cref="PostOrAbandon"/> itself:
    /// an accepted descriptor is closed and its budget given back, an acceptor request fails instead of waiting for ever.
    /// </summary>
    private void TakeNoMoreWork()
    {
        AfterLastTurn?.Invoke();
        if (State != RingState.Failed)
        {
            SetState(RingState.Stopped); // a full fence before the queue is drained: see PostOrAbandon
        }
        AbandonQueuedWork();
        _localWork.Clear();
    }

    private int _seenPoolThreads; // the thread pool's size at the end of the last turn (see InheritedPolicyGuard)

    private void Loop()
    {
        ArmWakeup();
        while (true)
        {
            RunWork();
            ThrowIfRingFailed();
            if (_stopping && _slots.Count == 0 && _closes.Pending == 0 && !_accepting!.AnyInKernel())
            {
                break;
            }

            _receives.PublishAndRearm();
            _closes.PrepareDeferred();

            uint waitFor = 0;
            // After a yield the loop does not sleep: what arrived while the pool ran its work is reaped at once.
            if (_localWork.Count == 0 && _closes.Deferred == 0 && !YieldedToDispatchedWork())
            {
                Interlocked.Exchange(ref _sleeping, 1);
                if (_remoteWork.IsEmpty)
                {
                    waitFor = 1;
                }
                else
                {
                    Volatile.Write(ref _sleeping, 0);
                }
            }

            long submittedBefore = _ring.SubmittedCount;
            int r = _ring.SubmitAndWait(waitFor);
            Volatile.Write(ref _sleeping, 0);
            Metrics.RecordEnter(_ring.SubmittedCount - submittedBefore);
            if (r < 0 && r != -Errno.EBUSY && r != -Errno.EAGAIN)
            {
                throw new IoUringException(r == -Errno.EBADR ? "io_uring_enter (completions were lost)" : "io_uring_enter", r);
            }
            if (_ring.HasOverflowedCompletions)
            {
                Metrics.CqOverflows.Add(1);
            }
            ReapCompletions();
            ThrowIfRingFailed();
            if (SchedulingPolicy == ThreadSchedulingPolicy.Batch)
            {
                InheritedPolicyGuard.AfterTurn(ref _seenPoolThreads);
            }
        }
    }

    /// <summary>The SQ or CQ failed somewhere a caller caught the exception (a connection's send loop): the loop cannot go on.</summary>
    private void ThrowIfRingFailed()
    {
        if (_ring.Failure is { } failure)
        {
            throw failure;
        }
    }

    /// <summary>
    /// Instead of sleeping (where <see cref="_mayYieldToDispatchedWork"/>): gives up the core with sched_yield, once,
    /// when the last turn reaped completions and the application work it handed to the pool has not run yet. On a core
    /// the ring shares with that pool thread, the pool thread runs first either way; yielding keeps the ring thread
    /// runnable, so it resumes when the pool thread is done, without the sleep in io_uring_enter and the wake-up by the
    /// kernel that each turn would cost otherwise (see docs/design.md, "A yield instead of a sleep"). Bounded: a turn
    /// that reaped nothing sleeps as before, so an idle ring, or one whose handed work waits for a starved pool, never
    /// spins; and where nothing else wants the core, sched_yield returns at once and the ring just looks again.
    /// </summary>
    private bool YieldedToDispatchedWork()
    {
        if (!_mayYieldToDispatchedWork || !_lastTurnReaped || !ApplicationDispatch!.MoreWorkQueued || !_remoteWork.IsEmpty)
        {
            return false;
        }
        Thread.Yield();
        Metrics.Yields.Add(1);
        return true;
    }

    private bool _lastTurnReaped; // the last turn reaped at least one completion (see YieldedToDispatchedWork)

    private void ReapCompletions()
    {
        int n;
        _lastTurnReaped = false;
        do
        {
            n = _ring.ReadCompletions(_completions);
            _lastTurnReaped |= n > 0;
            for (int i = 0; i < n; i++)
            {
                try
                {
                    Dispatch(in _completions[i]);
                }
                catch (Exception e) when (!IsFatal(e))
                {
                    OnCompletionFailed(in _completions[i], e);
                }
            }
            _receives.FlushQueued();
        }
        while (n == CompletionBatch);
    }

    private void RunWork()
    {
        int budget = MaxWorkItemsPerTurn;
        while (budget-- > 0)
        {
            if (_localWork.TryDequeue(out WorkItem item) || _remoteWork.TryDequeue(out item))
            {
                try
                {
                    item.Action(item.State);
                }
                catch (Exception e) when (!IsFatal(e))
                {
                    OnWorkItemFailed(item.State, e);
                }
            }
            else
            {
                return;
            }
        }
    }

    private void Dispatch(in IoUringCqe cqe)
    {
        ulong ud = cqe.UserData;
        switch (UserData.KindOf(ud))
        {
            case OperationKind.Wakeup:
                _wakeupArmed = false;
                ArmWakeup();
                break;
            case OperationKind.Accept:
            case OperationKind.Timeout:
                _accepting!.OnCompleted(cqe);
                break;
            case OperationKind.Receive:
                if (_slots.TryGet(UserData.SlotOf(ud), UserData.GenerationOf(ud), out var receiver))
                {
                    receiver.OnReceiveCompleted(cqe);
                }
                else if (cqe.HasBuffer)
                {
                    // A late completion for a connection that has gone: its buffer still goes back.
                    _receives.Release(cqe);
                }
                break;
            case OperationKind.Send:
                if (_slots.TryGet(UserData.SlotOf(ud), UserData.GenerationOf(ud), out var sender))
                {
                    sender.OnSendCompleted(cqe);
                }
                break;
            case OperationKind.Close:
                _closes.OnCompleted(cqe);
                break;
            case OperationKind.ArenaSend:
                OnArenaSendCompleted(cqe);
                break;
            default:
                // Cancel and other bookkeeping completions carry nothing the loop needs.
                break;
        }
    }

    // ---- wake-up --------------------------------------------------------------------------------------------------

    private void ArmWakeup()
    {
        IoUringSqe* sqe = _ring.GetSqe();
        SqePreparation.PrepareEventFdRead(sqe, _eventFd, _eventFdValue, UserData.Encode(OperationKind.Wakeup, 0, 0));
        _wakeupArmed = true;
    }
}
