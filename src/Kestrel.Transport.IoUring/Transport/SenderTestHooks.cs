namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// Test seams of the send direction. Unset in production: each costs one null check of a static field where it sits.
/// </summary>
internal static class SenderTestHooks
{
    /// <summary>Runs on the flushing thread inside a direct send, with its memory prepared, just before the syscall.</summary>
    internal static Action<IoUringConnection>? InsideDirectSend;
}
