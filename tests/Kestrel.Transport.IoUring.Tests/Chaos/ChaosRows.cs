namespace Kestrel.Transport.IoUring.Tests.Chaos;

/// <summary>One row of the transport's options matrix a chaos seed runs under.</summary>
internal sealed record ChaosRow(string Name, Action<IoUringTransportOptions> Apply)
{
    /// <summary>Every row; each CI seed is pinned to one, and together they cover all.</summary>
    public static readonly ChaosRow[] All =
    [
        new("direct-pool", o => { }),
        new("ring-send", o => o.SendPath = SendPathMode.Ring),
        new("inline", o => o.ApplicationScheduling = ApplicationSchedulingMode.Inline),
        new("inline-ring-send", o => { o.ApplicationScheduling = ApplicationSchedulingMode.Inline; o.SendPath = SendPathMode.Ring; }),
        new("zero-copy", o => o.ZeroCopySendThreshold = 16 * 1024),
        new("zero-copy-registered", o => { o.ZeroCopySendThreshold = 16 * 1024; o.RegisteredSendBufferSize = 256 * 1024; }),
        new("sqpoll", o => o.SqPoll = true),
        new("incremental-buffers", o => o.IncrementalReceiveBuffers = true),
        new("one-ring", o => o.RingCount = 1),
        // Real kernel pressure instead of injected faults: a CQ small enough to overflow (multishots end without
        // F_MORE) and so few provided buffers that receives end with ENOBUFS.
        new("pressure", o => { o.SubmissionQueueSize = 32; o.CompletionQueueSize = 64; o.ReceiveBufferCount = 8; }),
    ];

    public static ChaosRow Named(string name)
        => All.FirstOrDefault(r => r.Name == name) ?? throw new ArgumentException($"no chaos row '{name}'; rows: {string.Join(", ", All.Select(r => r.Name))}");
}
