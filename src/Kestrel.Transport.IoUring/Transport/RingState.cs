namespace Kestrel.Transport.IoUring.Transport;

/// <summary>Where a ring is in its life. Read from any thread; changed by the ring's own thread.</summary>
internal enum RingState
{
    /// <summary>The thread is creating the ring.</summary>
    Starting = 0,

    /// <summary>Serving: takes connections and work.</summary>
    Running = 1,

    /// <summary>Asked to stop: takes no new connections, ends once its connections have closed.</summary>
    Stopping = 2,

    /// <summary>Could not go on: its connections were reset, it takes no connections and runs no work.</summary>
    Failed = 3,

    /// <summary>The loop has ended: it runs no more work (work handed to it is abandoned), and the ring is closed.</summary>
    Stopped = 4,
}
