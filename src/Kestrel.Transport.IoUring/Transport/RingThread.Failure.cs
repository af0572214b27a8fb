using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;
using Microsoft.AspNetCore.Connections;

namespace Kestrel.Transport.IoUring.Transport;

// Faults: what a failing work item or completion handler costs (its connection, never the ring), and what a ring
// that cannot go on does before its thread ends (reset its connections, move its acceptors, let the kernel let go of
// every request before any memory it may touch is freed).
internal sealed unsafe partial class RingThread
{
    /// <summary>How long a failed ring waits for the kernel to let go of its requests before it leaks their memory instead.</summary>
    private const int DrainTimeoutMilliseconds = 2000;

    /// <summary>Rings whose memory the kernel may still touch: kept reachable for good, never freed.</summary>
    private static readonly List<RingThread> s_leaked = new();

    private int _state = (int)RingState.Starting;
    private bool _wakeupArmed;
    private bool _kernelMemoryLeaked;

    public RingState State => (RingState)Volatile.Read(ref _state);

    /// <summary>New connections and acceptors may be handed to this ring.</summary>
    public bool AcceptsConnections => State == RingState.Running;

    /// <summary>The ring failed and the kernel could not be reaped empty: its memory was left allocated for good.</summary>
    internal bool KernelMemoryLeaked => Volatile.Read(ref _kernelMemoryLeaked);

    private void SetState(RingState state) => Interlocked.Exchange(ref _state, (int)state);

    /// <summary>An exception the ring cannot survive: the SQ or CQ is unusable. Anything else costs one connection at most.</summary>
    private bool IsFatal(Exception e) => IsFatal(e, _ring);

    /// <summary>An exception <paramref name="ring"/> cannot survive: its SQ or CQ is unusable.</summary>
    internal static bool IsFatal(Exception e, Ring ring) => e is IoUringException or RingCorruptedException || ring.Failure is not null;

    /// <summary>
    /// Hands <paramref name="work"/> to this ring; if the ring runs no more work (failed, or its loop has ended), it is
    /// abandoned instead, here or by the ring. Dekker pairing with the ring: we enqueue, then read the state; the ring
    /// sets the state (a full fence), then drains the queue. Either it sees our item or we see the state.
    /// </summary>
    public void PostOrAbandon(Action<object?> action, IAbandonableWork work)
    {
        Post(action, work);
        if (RunsNoMoreWork)
        {
            AbandonQueuedWork();
        }
    }

    /// <summary>The ring failed, or its loop has ended: work handed to it now never runs.</summary>
    private bool RunsNoMoreWork => State is RingState.Failed or RingState.Stopped;

    private void AbandonQueuedWork()
    {
        while (_remoteWork.TryDequeue(out WorkItem item))
        {
            (item.State as IAbandonableWork)?.Abandon();
        }
    }

    private void OnWorkItemFailed(object? state, Exception error)
    {
        // A pipe continuation's state is the delegate of the connection that scheduled it.
        if ((state as IoUringConnection ?? (state as Delegate)?.Target as IoUringConnection) is { } connection)
        {
            connection.FailContained(error);
        }
        else
        {
            _context.Log.WorkItemFailed(Index, error);
        }
    }

    private void OnCompletionFailed(in IoUringCqe cqe, Exception error)
    {
        ulong ud = cqe.UserData;
        IoUringConnection? connection = UserData.KindOf(ud) switch
        {
            OperationKind.Receive or OperationKind.Send when _slots.TryGet(UserData.SlotOf(ud), UserData.GenerationOf(ud), out var c) => c,
            OperationKind.ArenaSend when _slots.TryGetAny(UserData.SlotOf(ud), out var c) => c,
            _ => null,
        };
        if (connection is not null)
        {
            connection.FailContained(error);
        }
        else
        {
            _context.Log.WorkItemFailed(Index, error);
        }
    }

    /// <summary>
    /// The loop cannot go on. No new connections or acceptors come here; queued hand-offs are refused; the acceptors
    /// move to a live ring; every connection is reset and its application side completed with the error; then the
    /// kernel is asked to cancel everything and reaped until it holds no request, within a bounded wait, and only then
    /// may memory it could touch be freed (else it is leaked). One Critical log line and a metric say so.
    /// </summary>
    private void FailRing(Exception error)
    {
        SetState(RingState.Failed);
        _context.Metrics.RingFailures.Add(1, Metrics.Tag);
        AbandonQueuedWork();
        _localWork.Clear();

        _accepting?.MoveToLiveRings();

        var connections = _slots.Live();
        var reason = new ConnectionAbortedException($"The io_uring ring {Index} failed: {error.Message}", error);
        foreach (var connection in connections)
        {
            connection.OnRingFailed(reason);
        }

        bool kernelQuiet = DrainKernel();
        _closes.CloseDeferredAfterRingFailure();
        foreach (var connection in connections)
        {
            connection.FinishRingFailure(kernelQuiet);
        }
        if (!kernelQuiet)
        {
            _kernelMemoryLeaked = true;
            lock (s_leaked)
            {
                s_leaked.Add(this); // its connections, pipes and buffers stay reachable: the kernel may still use them
            }
        }
        _context.Log.RingFailed(Index, error.Message, connections.Count, kernelQuiet
            ? "the kernel let go of every request before memory was freed."
            : $"the kernel still held requests after {DrainTimeoutMilliseconds} ms (or could not be reaped), so their memory is leaked rather than freed.", error);
    }

    /// <summary>Cancels every request and reaps until the kernel holds none that uses our memory. False if that did not happen in time.</summary>
    private bool DrainKernel()
    {
        try
        {
            if (!_ring.TryGetSqe(out IoUringSqe* sqe))
            {
                _ring.Submit();
                if (!_ring.TryGetSqe(out sqe))
                {
                    return false;
                }
            }
            SqePreparation.PrepareCancelEverything(sqe, UserData.Encode(OperationKind.Cancel, 0, 0));

            long deadline = Environment.TickCount64 + DrainTimeoutMilliseconds;
            // Close chains in the kernel are waited for too: only their completion gives their budget back.
            while (KernelHoldsMemory() || _closes.InKernel > 0)
            {
                if (Environment.TickCount64 > deadline)
                {
                    return false;
                }
                int r = _ring.SubmitAndWait(1, timeoutNanoseconds: 50_000_000);
                if (r < 0 && r != -Errno.EBUSY && r != -Errno.EAGAIN)
                {
                    return false;
                }
                int n;
                while ((n = _ring.ReadCompletions(_completions)) > 0)
                {
                    for (int i = 0; i < n; i++)
                    {
                        OnCompletionWhileDraining(in _completions[i]);
                    }
                }
            }
            return true;
        }
        catch (Exception)
        {
            return false; // the ring is past reaping (a corrupted CQ): leak
        }
    }

    private bool KernelHoldsMemory()
    {
        if (_wakeupArmed || _zeroCopy.ArenaInUse)
        {
            return true;
        }
        foreach (var connection in _slots.Live())
        {
            if (connection.KernelHoldsRequests)
            {
                return true;
            }
        }
        return false;
    }

    private void OnCompletionWhileDraining(in IoUringCqe cqe)
    {
        ulong ud = cqe.UserData;
        switch (UserData.KindOf(ud))
        {
            case OperationKind.Wakeup:
                _wakeupArmed = false;
                break;
            case OperationKind.Receive:
            case OperationKind.Send:
                if (_slots.TryGet(UserData.SlotOf(ud), UserData.GenerationOf(ud), out var connection))
                {
                    connection.OnCompletionWhileDraining(cqe);
                }
                break;
            case OperationKind.ArenaSend:
                if (_zeroCopy.OnArenaCompletion(cqe) && _slots.TryGetAny(UserData.SlotOf(ud), out var sender))
                {
                    sender.OnCompletionWhileDraining(cqe);
                }
                break;
            case OperationKind.Accept when cqe.Result >= 0:
                // Accepted before the cancel landed: nobody will serve it.
                AcceptedDescriptor.Refuse(cqe.Result);
                break;
            case OperationKind.Close:
                _closes.OnCompleted(cqe);
                break;
        }
    }
}
