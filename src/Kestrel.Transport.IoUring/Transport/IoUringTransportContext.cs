using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>What every ring, listener and connection of one transport factory shares.</summary>
internal sealed class IoUringTransportContext(
    IoUringTransportOptions options,
    IoUringTrace log,
    IoUringTransportMetrics metrics,
    IoUringCapabilities capabilities,
    IMemoryPoolFactory<byte>? memoryPoolFactory,
    DescriptorBudget descriptors)
{
    /// <summary>The label Kestrel's pool metrics carry for transport pools.</summary>
    private static readonly MemoryPoolOptions s_poolOptions = new() { Owner = "kestrel" };

    public IoUringTransportOptions Options { get; } = options;
    public IoUringTrace Log { get; } = log;
    public IoUringTransportMetrics Metrics { get; } = metrics;
    public IoUringCapabilities Capabilities { get; } = capabilities;

    /// <summary>How many connections the transport may hold before it stops accepting.</summary>
    public DescriptorBudget Descriptors { get; } = descriptors;

    /// <summary>Where the application side of the pipes continues: the thread pool or inline on the ring thread.</summary>
    public PipeScheduler ApplicationScheduler { get; } =
        options.ApplicationScheduling == ApplicationSchedulingMode.Inline ? PipeScheduler.Inline : PipeScheduler.ThreadPool;

    /// <summary>
    /// True when the thread that flushes a connection's output sends it itself (<see cref="SendPathMode.Direct"/>).
    /// With Inline scheduling HTTP/1.1 flushes on the ring thread, where the send loop stays and uses the ring; HTTP/2
    /// streams run on the thread pool in every mode (Kestrel dispatches them there), and their flushes send directly
    /// rather than wake the ring once per flush.
    /// </summary>
    public bool SendsFromFlushingThread { get; } = options.SendPath == SendPathMode.Direct;

    /// <summary>A memory pool for one ring: Kestrel's pinned block pool from DI, or the shared array pool without one.</summary>
    public MemoryPool<byte> CreateMemoryPool() => memoryPoolFactory?.Create(s_poolOptions) ?? MemoryPool<byte>.Shared;
}
