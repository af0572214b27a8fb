using System.Diagnostics.Metrics;
using Kestrel.Transport.IoUring.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>One real ring thread without a server around it, with a descriptor budget and metrics of its own.</summary>
internal sealed class StandaloneRing : IAsyncDisposable
{
    private readonly ServiceProvider _services;

    private StandaloneRing(ServiceProvider services, IoUringTransportContext context)
    {
        _services = services;
        Context = context;
        Ring = new RingThread(context, 0);
    }

    public RingThread Ring { get; }

    public IoUringTransportContext Context { get; }

    /// <summary>The budget this ring's connections count in (nothing else shares it).</summary>
    public DescriptorBudget Descriptors => Context.Descriptors;

    /// <summary>The services whose IMeterFactory the ring's instruments come from.</summary>
    public IServiceProvider Services => _services;

    public static async Task<StandaloneRing> StartAsync(Action<IoUringTransportOptions>? configure = null)
    {
        var options = new IoUringTransportOptions { RingCount = 1, SubmissionQueueSize = 64, CompletionQueueSize = 256, ReceiveBufferCount = 16 };
        configure?.Invoke(options);
        var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var metrics = new IoUringTransportMetrics(services.GetRequiredService<IMeterFactory>());
        var context = new IoUringTransportContext(options, new IoUringTrace(NullLoggerFactory.Instance), metrics,
            IoUringCapabilities.Current, memoryPoolFactory: null, DescriptorBudget.FromProcessLimits(1));
        var ring = new StandaloneRing(services, context);
        await ring.Ring.StartAsync();
        return ring;
    }

    public async ValueTask DisposeAsync()
    {
        await Ring.StopAsync().WaitAsync(TimeSpan.FromSeconds(30));
        await _services.DisposeAsync();
    }
}
