using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Transport;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Kestrel.Transport.IoUring;

/// <summary>
/// Kestrel's entry point into the io_uring transport. On the first bind it decides, once, whether io_uring can serve
/// (options, the off switch, the operating system, a kernel probe, ring creation); if not, it logs one warning naming
/// the reason and hands every bind to the transport Kestrel would have used without io_uring — the Sockets factory
/// registered in DI, with the app's own <see cref="SocketTransportOptions"/> (UseSockets) — or fails start-up, as the
/// options say. The rings and their
/// threads live as long as this factory, which the host disposes on shutdown.
/// </summary>
public sealed class IoUringTransportFactory : IConnectionListenerFactory, IConnectionListenerFactorySelector, IAsyncDisposable
{
    private readonly IOptions<IoUringTransportOptions> _options;
    private readonly ILoggerFactory _loggerFactory;
    private readonly IServiceProvider? _services;
    private readonly IoUringTrace _log;
    private readonly SemaphoreSlim _startLock = new(1, 1);
    private IoUringTransportMetrics? _metrics;
    private FactoryState _state = FactoryState.NotStarted.Instance; // changed under _startLock, and by DisposeAsync

    /// <summary>Creates the factory; DI supplies <paramref name="services"/> for Kestrel's memory pool factory and IMeterFactory.</summary>
    public IoUringTransportFactory(IOptions<IoUringTransportOptions> options, ILoggerFactory loggerFactory, IServiceProvider? services = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        _options = options;
        _loggerFactory = loggerFactory;
        _services = services;
        _log = new IoUringTrace(loggerFactory);
    }

    /// <summary>True once a bind has chosen io_uring; false before the first bind or after a fall-back.</summary>
    public bool IsUsingIoUring => _state is FactoryState.ServingIoUring;

    /// <summary>Why the transport serves with Sockets instead of io_uring (null while io_uring serves or before the first bind).</summary>
    public string? FallbackReason { get; private set; }

    /// <summary>The number of rings serving (0 before the first bind or after a fall-back).</summary>
    public int RingCount => (_state as FactoryState.ServingIoUring)?.Rings.Length ?? 0;

    /// <summary>The rings serving, for tests that reach into one (empty before the first bind or after a fall-back).</summary>
    internal IReadOnlyList<RingThread> Rings => (_state as FactoryState.ServingIoUring)?.Rings ?? [];

    /// <inheritdoc />
    public bool CanBind(EndPoint endpoint) => endpoint is IPEndPoint or UnixDomainSocketEndPoint or FileHandleEndPoint;

    /// <inheritdoc />
    public async ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        switch (await EnsureStartedAsync().ConfigureAwait(false))
        {
            case FactoryState.ServingFallback fallback:
                return await fallback.Sockets.BindAsync(endpoint, cancellationToken).ConfigureAwait(false);
            case FactoryState.ServingIoUring serving:
                var listener = new IoUringConnectionListener(serving.Context, serving.Rings, endpoint);
                await listener.BindAsync().ConfigureAwait(false);
                return listener;
            default:
                throw new ObjectDisposedException(nameof(IoUringTransportFactory));
        }
    }

    /// <summary>Decides, on the first bind, what serves: the rings, or the fall-back; later binds get the same answer.</summary>
    private async Task<FactoryState> EnsureStartedAsync()
    {
        if (_state is not FactoryState.NotStarted)
        {
            return _state;
        }
        await _startLock.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_state is not FactoryState.NotStarted)
            {
                return _state;
            }
            IoUringTransportOptions options = _options.Value; // runs the validator: bad options throw here, by name
            _metrics = new IoUringTransportMetrics(_services?.GetService<IMeterFactory>());

            var (serving, whyNot) = await TryStartRingsAsync(options).ConfigureAwait(false);
            _state = serving is not null ? serving : FallBack(options, whyNot ?? throw new UnreachableException("no rings and no reason"));
            return _state;
        }
        finally
        {
            _startLock.Release();
        }
    }

    /// <summary>io_uring cannot serve: throws if the options say so, else logs why once and hands binds to Sockets.</summary>
    private FactoryState.ServingFallback FallBack(IoUringTransportOptions options, string reason)
    {
        if (options.WhenUnavailable == IoUringUnavailableBehavior.Throw)
        {
            throw new PlatformNotSupportedException($"The io_uring transport cannot start: {reason} (IoUringTransportOptions.WhenUnavailable is Throw).");
        }
        FallbackReason = reason;
        _metrics!.Fallbacks.Add(1);
        _log.Lifetime.FallingBackToSockets(reason);
        return new FactoryState.ServingFallback(FindFallbackFactory());
    }

    /// <summary>Starts the rings; returns them serving, or why io_uring cannot serve.</summary>
    private async Task<(FactoryState.ServingIoUring? Serving, string? WhyNot)> TryStartRingsAsync(IoUringTransportOptions options)
    {
        if (!options.Enabled)
        {
            return (null, "turned off by IoUringTransportOptions.Enabled = false");
        }
        if (IoUringTransportOptions.DisabledByEnvironment())
        {
            return (null, $"turned off by the environment variable {IoUringTransportOptions.DisableEnvironmentVariable}");
        }
        // Decided before any Linux-only system call is made: on a developer's Windows or macOS machine the app serves.
        if (PlatformSupport.WhyUnsupported(options.SimulatedOperatingSystem) is { } platform)
        {
            return (null, platform);
        }

        IoUringCapabilities capabilities = options.SimulatedSetupErrno is int errno
            ? IoUringCapabilities.Probe(errno)
            : IoUringCapabilities.Current;
        if (!capabilities.IsSupported)
        {
            return (null, capabilities.UnavailableReason);
        }

        var context = new IoUringTransportContext(options, _log, _metrics!, capabilities,
            _services?.GetService<IMemoryPoolFactory<byte>>(), DescriptorBudget.FromProcessLimits(options.RingCount));
        var rings = new RingThread[options.RingCount];
        try
        {
            for (int i = 0; i < rings.Length; i++)
            {
                rings[i] = new RingThread(context, i);
                await rings[i].StartAsync().ConfigureAwait(false);
            }
        }
        catch (IoUringException e)
        {
            await StopRingsAsync(rings).ConfigureAwait(false);
            string hint = e.ErrorCode == Errno.ENOMEM
                ? " (RLIMIT_MEMLOCK may be too low for the rings and buffer rings; raise it or lower the ring and buffer sizes)"
                : "";
            return (null, $"creating a ring failed: {e.Message}{hint}");
        }

        _log.Lifetime.TransportStarted(Describe(options, capabilities, rings));
        return (new FactoryState.ServingIoUring(context, rings), null);
    }

    private static string Describe(IoUringTransportOptions o, IoUringCapabilities caps, RingThread[] rings)
    {
        var disabled = new List<string>();
        if (o.ZeroCopySendThreshold == 0) disabled.Add("send_zc (ZeroCopySendThreshold = 0)");
        else if (!caps.SendZeroCopy) disabled.Add("send_zc (not supported by this kernel)");
        if (!rings[0].UsesFixedFiles) disabled.Add("registered files (registration failed)");
        var ring = rings[0].Ring;
        string features = (ring.IsSqPoll ? $"SQPOLL (idle {o.SqPollIdleMilliseconds} ms{(o.SqPollCpu >= 0 ? $", from CPU {o.SqPollCpu}" : "")}), " : "")
            + $"multishot accept, multishot recv with a provided buffer ring ({o.ReceiveBufferCount} x {o.ReceiveBufferSize} B per ring"
            + (rings[0].Buffers.IsIncremental ? ", incremental" : "") + ")"
            + (rings[0].UsesFixedFiles ? ", registered files" : "")
            + (ring.IsRingFdRegistered ? ", registered ring fd" : "")
            + $", setup {ring.Flags}"
            + (o.ZeroCopySendThreshold > 0 && caps.SendZeroCopy ? $", send_zc from {o.ZeroCopySendThreshold} B" : "")
            + (rings[0].SendArena is { } arena ? $", registered send buffers ({arena.ChunkCount} x {arena.ChunkSize / 1024} KiB per ring)" : "");
        if (o.RegisteredSendBufferSize > 0 && rings[0].SendArena is null)
            disabled.Add(o.ZeroCopySendThreshold == 0 ? "registered send buffers (they need ZeroCopySendThreshold > 0)" : "registered send buffers (registration failed)");
        if (o.SqPoll && !ring.IsSqPoll) disabled.Add("SQPOLL (refused by the kernel)");
        if (o.IncrementalReceiveBuffers && !rings[0].Buffers.IsIncremental) disabled.Add("incremental receive buffers (not supported by this kernel)");
        return $"{rings.Length} ring(s) on Linux {caps.KernelRelease}, SQ {rings[0].Ring.SubmissionQueueEntries} / CQ {rings[0].Ring.CompletionQueueEntries}; "
            + $"application code on the {(o.ApplicationScheduling == ApplicationSchedulingMode.Inline ? "ring threads (inline)" : "thread pool")}; "
            + $"sends {SendPathSummary(rings[0].Context.SendsFromFlushingThread, o.ApplicationScheduling)}; "
            + $"ring threads {(rings[0].SchedulingPolicy == ThreadSchedulingPolicy.Batch ? "SCHED_BATCH" : "SCHED_OTHER")}; "
            + $"features: {features}"
            + (disabled.Count > 0 ? $"; not used: {string.Join(", ", disabled)}" : "");
    }

    /// <summary>
    /// The transport Kestrel would pick were io_uring absent: the last registered listener factory other than this one
    /// (Kestrel tries the last registered first), which is the Sockets factory UseKestrel or UseSockets registered —
    /// UseIoUring registers it too if neither has yet — so the app's SocketTransportOptions and hooks apply as they
    /// would without io_uring. Without DI (a factory constructed by hand), a Sockets factory with default options.
    /// </summary>
    private IConnectionListenerFactory FindFallbackFactory()
    {
        IConnectionListenerFactory? registered = _services?.GetServices<IConnectionListenerFactory>()
            .Reverse()
            .FirstOrDefault(f => !ReferenceEquals(f, this) && f is not IoUringTransportFactory);
        return registered ?? new SocketTransportFactory(Options.Create(new SocketTransportOptions()), _loggerFactory);
    }

    private static async Task StopRingsAsync(RingThread?[] rings)
    {
        foreach (var ring in rings)
        {
            if (ring is not null)
            {
                try
                {
                    await ring.StopAsync().ConfigureAwait(false);
                }
                catch (InvalidOperationException)
                {
                    // never started
                }
            }
        }
    }

    /// <summary>Stops the rings: connections still open are aborted, and each ring thread ends once its connections have closed.</summary>
    public async ValueTask DisposeAsync()
    {
        FactoryState was = Interlocked.Exchange(ref _state, FactoryState.Disposed.Instance);
        if (was is FactoryState.ServingIoUring serving)
        {
            await StopRingsAsync(serving.Rings).ConfigureAwait(false);
        }
        _metrics?.Dispose();
    }

    /// <summary>What the factory is doing: one state, rather than fields that must agree.</summary>
    private abstract class FactoryState
    {
        /// <summary>No bind yet: nothing is decided.</summary>
        public sealed class NotStarted : FactoryState
        {
            public static readonly NotStarted Instance = new();
        }

        /// <summary>The rings serve every bind.</summary>
        public sealed class ServingIoUring(IoUringTransportContext context, RingThread[] rings) : FactoryState
        {
            public IoUringTransportContext Context { get; } = context;
            public RingThread[] Rings { get; } = rings;
        }

        /// <summary>io_uring cannot serve (see FallbackReason): the Sockets transport Kestrel registered serves every bind.</summary>
        public sealed class ServingFallback(IConnectionListenerFactory sockets) : FactoryState
        {
            public IConnectionListenerFactory Sockets { get; } = sockets;
        }

        /// <summary>Disposed by the host: the rings are stopped; no more binds.</summary>
        public sealed class Disposed : FactoryState
        {
            public static readonly Disposed Instance = new();
        }
    }

    private static string SendPathSummary(bool direct, ApplicationSchedulingMode scheduling) => (direct, scheduling) switch
    {
        (false, _) => "through the ring",
        (true, ApplicationSchedulingMode.Inline) => "through the ring from the ring threads, direct from any other flushing thread (HTTP/2 streams)",
        _ => "direct from the flushing thread, through the ring when the socket is full",
    };
}
