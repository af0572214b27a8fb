using System.Net;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// The transport's connection and accept events, category "Kestrel.Transport.IoUring". Connection events reuse the
/// Sockets transport's event ids and names (4 ConnectionPause, 5 ConnectionResume, 6 ConnectionReadFin,
/// 7 ConnectionWriteFin, 8 ConnectionWriteRst, 14 ConnectionError, 19 ConnectionReset) so that tools and tests that
/// watch for those work unchanged. Like the Sockets category, it stays at Debug while clients close, reset or abort:
/// start-up, fall-back and per-ring set-up lines go to <see cref="Lifetime"/>, a category of their own.
/// </summary>
internal sealed partial class IoUringTrace(ILogger logger, IoUringLifetimeTrace lifetime)
{
    public const string CategoryName = "Kestrel.Transport.IoUring";

    private readonly ILogger _logger = logger;

    public IoUringTrace(ILoggerFactory loggerFactory)
        : this(loggerFactory.CreateLogger(CategoryName), new IoUringLifetimeTrace(loggerFactory.CreateLogger(IoUringLifetimeTrace.CategoryName)))
    {
    }

    /// <summary>Start-up, fall-back and ring set-up events.</summary>
    public IoUringLifetimeTrace Lifetime { get; } = lifetime;

    // Ring set-up events keep their call sites on this class; they are written in the lifetime category.
    public void FixedFilesUnavailable(int ring, string error) => Lifetime.FixedFilesUnavailable(ring, error);

    public void ZeroCopyDisabled(int ring, long copies, long sends) => Lifetime.ZeroCopyDisabled(ring, copies, sends);

    public void SqPollUnavailable(int ring, string error) => Lifetime.SqPollUnavailable(ring, error);

    public void RingThreadPolicyRefused(int ring, string error) => Lifetime.RingThreadPolicyRefused(ring, error);

    public void RegisteredBuffersUnavailable(int ring, string error) => Lifetime.RegisteredBuffersUnavailable(ring, error);

    public ILogger Logger => _logger;

    [LoggerMessage(4, LogLevel.Debug, @"Connection id ""{ConnectionId}"" paused.", EventName = "ConnectionPause")]
    public partial void ConnectionPause(string connectionId);

    [LoggerMessage(5, LogLevel.Debug, @"Connection id ""{ConnectionId}"" resumed.", EventName = "ConnectionResume")]
    public partial void ConnectionResume(string connectionId);

    [LoggerMessage(6, LogLevel.Debug, @"Connection id ""{ConnectionId}"" received FIN.", EventName = "ConnectionReadFin")]
    public partial void ConnectionReadFin(string connectionId);

    [LoggerMessage(7, LogLevel.Debug, @"Connection id ""{ConnectionId}"" sending FIN because: ""{Reason}""", EventName = "ConnectionWriteFin")]
    public partial void ConnectionWriteFin(string connectionId, string reason);

    [LoggerMessage(8, LogLevel.Debug, @"Connection id ""{ConnectionId}"" sending RST because: ""{Reason}""", EventName = "ConnectionWriteRst")]
    public partial void ConnectionWriteRst(string connectionId, string reason);

    [LoggerMessage(14, LogLevel.Debug, @"Connection id ""{ConnectionId}"" communication error.", EventName = "ConnectionError")]
    public partial void ConnectionError(string connectionId, Exception ex);

    [LoggerMessage(19, LogLevel.Debug, @"Connection id ""{ConnectionId}"" reset.", EventName = "ConnectionReset")]
    public partial void ConnectionReset(string connectionId);

    [LoggerMessage(104, LogLevel.Warning, "Accepting on {EndPoint} paused for 100 ms: {Error}. Established connections are unaffected.", EventName = "AcceptPaused")]
    public partial void AcceptPaused(EndPoint? endPoint, string error);

    [LoggerMessage(105, LogLevel.Error, "Setting up an accepted connection on {EndPoint} failed.", EventName = "AcceptFailed")]
    public partial void AcceptFailed(EndPoint? endPoint, Exception ex);

    [LoggerMessage(106, LogLevel.Critical, "Ring {Ring} failed and stopped: {Error} Its {Connections} connection(s) were reset, new connections go to the other rings; {Memory}", EventName = "RingFailed")]
    public partial void RingFailed(int ring, string error, int connections, string memory, Exception ex);

    [LoggerMessage(109, LogLevel.Error, @"Connection id ""{ConnectionId}"": the transport failed while serving it; this connection was aborted, its ring carries on.", EventName = "ConnectionFailed")]
    public partial void ConnectionFailed(string connectionId, Exception ex);

    [LoggerMessage(110, LogLevel.Error, "Ring {Ring}: a queued work item failed; the ring carries on.", EventName = "WorkItemFailed")]
    public partial void WorkItemFailed(int ring, Exception ex);

    [LoggerMessage(112, LogLevel.Information, "Accepting on {EndPoint}: RLIMIT_NOFILE is {Limit} now, with {Open} connections open; accepting one connection at a time while near the limit.", EventName = "AcceptingOneAtATime")]
    public partial void AcceptingOneAtATime(EndPoint? endPoint, long limit, int open);

    [LoggerMessage(111, LogLevel.Critical, "Accepting on {EndPoint} stopped: no ring is left to accept on.", EventName = "NoRingLeftToAccept")]
    public partial void NoRingLeftToAccept(EndPoint? endPoint);
}
