using System.Runtime.CompilerServices;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// <c>await ring.SwitchTo()</c>: continues on the ring's thread, at once when already there, else through the ring's
/// queue (which wakes a sleeping ring from the awaiting thread itself).
/// </summary>
internal readonly struct RingThreadAwaitable(RingThread ring) : ICriticalNotifyCompletion
{
    public RingThreadAwaitable GetAwaiter() => this;

    public bool IsCompleted => ring.IsOwnerThread;

    public void GetResult()
    {
    }

    public void OnCompleted(Action continuation) => UnsafeOnCompleted(continuation);

    public void UnsafeOnCompleted(Action continuation) => ring.Post(static c => ((Action)c!)(), continuation);
}
