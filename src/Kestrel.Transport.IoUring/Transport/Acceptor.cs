using System.Diagnostics;
using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>Where a listener's accepting on one ring stands, and so what of it the kernel holds.</summary>
internal enum AcceptorState
{
    /// <summary>Nothing in the kernel: just made, or the accept just ended; armed before the ring thread moves on.</summary>
    Idle,

    /// <summary>A multishot accept is in the kernel (it may take a whole backlog at once).</summary>
    ArmedMultishot,

    /// <summary>An accept is in the kernel that ends at its next final completion (a single accept, or a multishot one being cancelled); then it is armed again.</summary>
    ArmedSingle,

    /// <summary>Out of descriptors: the accept is being cancelled and the pause's timeout is in the kernel.</summary>
    CancellingForPause,

    /// <summary>Out of descriptors: only the pause's timeout is in the kernel; when it expires, accepting resumes.</summary>
    Paused,

    /// <summary>Stopped (unbind, ring stop or failure): what the kernel still holds is cancelled, its completions awaited.</summary>
    Stopping,

    /// <summary>The kernel holds nothing more of this acceptor; <see cref="Acceptor.Finished"/> has completed.</summary>
    Stopped,
}

/// <summary>
/// A listener's accepting on one ring: its <see cref="AcceptorState"/>, changed only by the named transitions below,
/// and the limit watch (a timeout beside the accept, in the kernel or not in any state). Ring-thread state, except
/// <see cref="Finished"/>. <see cref="RingAcceptors"/> makes the SQEs; this type keeps the account of them.
/// </summary>
internal sealed class Acceptor(IoUringConnectionListener listener, int index, RingThread ring)
{
    /// <summary>In <see cref="AcceptorState.Stopping"/>: completions of the accept and the pause still to come.</summary>
    private int _awaitedWhileStopping;

    public IoUringConnectionListener Listener { get; } = listener;

    /// <summary>The acceptor's index in its ring's table; never reused, so no generation is needed.</summary>
    public int Index { get; } = index;

    public AcceptorState State { get; private set; }

    /// <summary>A limit-watch timeout is in the kernel (see RingAcceptors).</summary>
    public bool Watching { get; private set; }

    /// <summary>The kernel holds a request of this acceptor: its accept, its pause or its limit watch.</summary>
    public bool InKernel => Watching || State switch
    {
        AcceptorState.Idle or AcceptorState.Stopped => false,
        AcceptorState.Stopping => _awaitedWhileStopping > 0,
        _ => true,
    };

    public bool IsStopping => State is AcceptorState.Stopping or AcceptorState.Stopped;

    /// <summary>An accept of this acceptor is in the kernel (and not stopping).</summary>
    public bool IsArmed => State is AcceptorState.ArmedMultishot or AcceptorState.ArmedSingle or AcceptorState.CancellingForPause;

    public ulong UserData => Core.UserData.Encode(OperationKind.Accept, 0, Index);

    public ulong PauseUserData => Core.UserData.Encode(OperationKind.Timeout, PauseMarker, Index);

    public ulong WatchUserData => Core.UserData.Encode(OperationKind.Timeout, WatchMarker, Index);

    public ulong CancelUserData => Core.UserData.Encode(OperationKind.Cancel, 0, Index);

    /// <summary>Generation bits that tell the acceptor's two timeouts apart.</summary>
    public const uint PauseMarker = 0, WatchMarker = 1;

    /// <summary>Completes when the kernel holds nothing more of this acceptor.</summary>
    public TaskCompletionSource Finished { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Idle → ArmedMultishot or ArmedSingle: an accept went into the kernel.</summary>
    public void OnArmed(bool multishot) => Move(multishot ? AcceptorState.ArmedMultishot : AcceptorState.ArmedSingle, AcceptorState.Idle);

    /// <summary>ArmedMultishot → ArmedSingle: the multishot accept is being cancelled; its final completion arms again.</summary>
    public void OnMultishotGivingWay() => Move(AcceptorState.ArmedSingle, AcceptorState.ArmedMultishot);

    /// <summary>The accept's final completion: Armed → Idle, CancellingForPause → Paused, or one fewer awaited while stopping.</summary>
    public void OnAcceptEnded()
    {
        AssertOwner();
        switch (State)
        {
            case AcceptorState.ArmedMultishot or AcceptorState.ArmedSingle:
                State = AcceptorState.Idle;
                break;
            case AcceptorState.CancellingForPause:
                State = AcceptorState.Paused;
                break;
            default:
                OnAwaitedWhileStopping();
                break;
        }
    }

    /// <summary>Idle → Paused, or Armed → CancellingForPause (the caller cancels the accept): the pause's timeout went into the kernel.</summary>
    public void OnPaused()
    {
        AssertOwner();
        Debug.Assert(State is AcceptorState.Idle || IsArmed && State != AcceptorState.CancellingForPause, $"paused when {State}");
        State = State == AcceptorState.Idle ? AcceptorState.Paused : AcceptorState.CancellingForPause;
    }

    /// <summary>The pause's timeout completed: Paused → Idle, CancellingForPause → ArmedSingle (the accept is still to end), or one fewer awaited while stopping.</summary>
    public void OnPauseEnded()
    {
        AssertOwner();
        switch (State)
        {
            case AcceptorState.Paused:
                State = AcceptorState.Idle;
                break;
            case AcceptorState.CancellingForPause:
                State = AcceptorState.ArmedSingle;
                break;
            default:
                OnAwaitedWhileStopping();
                break;
        }
    }

    /// <summary>Any state but Stopping/Stopped → Stopping, awaiting the accept's and the pause's completions (cancelled by the caller, or gone with a failed ring).</summary>
    public void OnStopping()
    {
        AssertOwner();
        Debug.Assert(!IsStopping, $"stopping when {State}");
        _awaitedWhileStopping = State switch
        {
            AcceptorState.CancellingForPause => 2,
            AcceptorState.ArmedMultishot or AcceptorState.ArmedSingle or AcceptorState.Paused => 1,
            _ => 0,
        };
        State = AcceptorState.Stopping;
    }

    /// <summary>Stopping → Stopped once the kernel holds nothing more of it; true if it finished now.</summary>
    public bool TryFinish()
    {
        AssertOwner();
        if (State != AcceptorState.Stopping || InKernel)
        {
            return false;
        }
        State = AcceptorState.Stopped;
        Finished.TrySetResult();
        return true;
    }

    /// <summary>The limit watch's timeout went into the kernel.</summary>
    public void OnWatchArmed()
    {
        AssertOwner();
        Debug.Assert(!Watching);
        Watching = true;
    }

    /// <summary>The limit watch's timeout completed (expired or cancelled).</summary>
    public void OnWatchEnded()
    {
        AssertOwner();
        Watching = false;
    }

    private void OnAwaitedWhileStopping()
    {
        Debug.Assert(State == AcceptorState.Stopping && _awaitedWhileStopping > 0, $"a completion not awaited when {State}");
        if (State == AcceptorState.Stopping && _awaitedWhileStopping > 0)
        {
            _awaitedWhileStopping--;
        }
    }

    private void Move(AcceptorState to, AcceptorState from)
    {
        AssertOwner();
        Debug.Assert(State == from, $"{from} → {to} when {State}");
        State = to;
    }

    [Conditional("DEBUG")]
    private void AssertOwner() => Debug.Assert(ring.IsOwnerThread, "an acceptor is ring-thread state");
}
