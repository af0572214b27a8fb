using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// The transport's lifetime events, category "Kestrel.Transport.IoUring.Lifetime": the start-up line naming the rings
/// and features, the fall-back warning naming why io_uring cannot serve, and per-ring set-up notes. Kept apart from
/// the connection category so that category can stay as quiet as the Sockets transport's.
/// </summary>
internal sealed partial class IoUringLifetimeTrace(ILogger logger)
{
    public const string CategoryName = "Kestrel.Transport.IoUring.Lifetime";

    private readonly ILogger _logger = logger;

    [LoggerMessage(100, LogLevel.Information, "io_uring transport started: {Summary}", EventName = "TransportStarted")]
    public partial void TransportStarted(string summary);

    [LoggerMessage(101, LogLevel.Warning, "io_uring is unavailable ({Reason}); serving with the Sockets transport instead.", EventName = "FallingBackToSockets")]
    public partial void FallingBackToSockets(string reason);

    [LoggerMessage(102, LogLevel.Warning, "Ring {Ring}: registered files unavailable ({Error}); connections use ordinary descriptors.", EventName = "FixedFilesUnavailable")]
    public partial void FixedFilesUnavailable(int ring, string error);

    [LoggerMessage(103, LogLevel.Information, "Ring {Ring}: the kernel copied {Copies} of {Sends} zero-copy sends (loopback or no NIC support); zero-copy is off on this ring.", EventName = "ZeroCopyDisabled")]
    public partial void ZeroCopyDisabled(int ring, long copies, long sends);

    [LoggerMessage(107, LogLevel.Warning, "Ring {Ring}: SQPOLL was refused ({Error}); this ring runs in the default mode.", EventName = "SqPollUnavailable")]
    public partial void SqPollUnavailable(int ring, string error);

    [LoggerMessage(113, LogLevel.Warning, "Ring {Ring}: its thread could not switch to SCHED_BATCH ({Error}); it runs under the default policy, and waking it may preempt the application's threads.", EventName = "RingThreadPolicyRefused")]
    public partial void RingThreadPolicyRefused(int ring, string error);

    [LoggerMessage(108, LogLevel.Warning, "Ring {Ring}: registering send buffers failed ({Error}); sends are not registered. RLIMIT_MEMLOCK may be too low.", EventName = "RegisteredBuffersUnavailable")]
    public partial void RegisteredBuffersUnavailable(int ring, string error);
}
