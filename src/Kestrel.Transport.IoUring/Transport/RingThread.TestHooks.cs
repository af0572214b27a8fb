namespace Kestrel.Transport.IoUring.Transport;

// Test-only pauses at the two points where a ring's end races other threads. Unset (null) in production: each costs
// one field read where it is checked, and neither is on a per-request path.
internal sealed partial class RingThread
{
    /// <summary>Runs on a posting thread that won the sleeping flag, just before it writes the eventfd.</summary>
    internal Action? BeforeWakeWrite { get; set; }

    /// <summary>Runs on the ring thread once the loop has run its last turn, before the ring takes no more work.</summary>
    internal Action? AfterLastTurn { get; set; }
}
