using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;

namespace Kestrel.Transport.IoUring;

/// <summary>Where the application's code (Kestrel's HTTP parsing and your handlers) runs after data arrives.</summary>
public enum ApplicationSchedulingMode
{
    /// <summary>
    /// On the .NET thread pool, as with Kestrel's Sockets transport. A handler that blocks only blocks a pool thread;
    /// the ring keeps serving every other connection. The default.
    /// </summary>
    ThreadPool = 0,

    /// <summary>
    /// Inline on the ring's own thread: no hand-off between threads per request, which is fastest, but a handler that
    /// blocks (sync I/O, locks, .Result) stalls every connection on that ring until it returns. Use it only for
    /// handlers that never block, as TechEmpower-style benchmarks do.
    /// </summary>
    Inline = 1,
}

/// <summary>How bytes the application flushes reach the socket.</summary>
public enum SendPathMode
{
    /// <summary>
    /// The thread that flushes a response sends it at once with a non-blocking send(2) when the connection has no send
    /// in flight, as the Sockets transport does; only what the kernel does not take at once (a full socket buffer)
    /// goes on through the ring. A response never waits for the ring thread to wake up. Responses flushed in a row
    /// within one work item (pipelining, HTTP/2, TLS) leave together at its end, in one send. Zero-copy sends, and
    /// flushes on the ring thread itself (<see cref="ApplicationSchedulingMode.Inline"/> HTTP/1.1), use the ring. The default.
    /// </summary>
    Direct = 0,

    /// <summary>Every send goes through the ring: the flushing thread hands the bytes to the ring thread, which sends them.</summary>
    Ring = 1,
}

/// <summary>How the kernel schedules the ring threads against the threads that run the application.</summary>
public enum RingThreadPolicy
{
    /// <summary>
    /// SCHED_BATCH: a ring thread gets the same share of CPU as any other thread, but waking it (a receive completion,
    /// a response handed to it) does not preempt the application thread running on that core. It runs when that
    /// thread blocks, yields or ends its time slice, and then takes every completion and every handed-over send that
    /// piled up in one turn. On a busy core this replaces a context switch per request by one per batch. When the core
    /// is idle it runs at once, as before. The default.
    /// </summary>
    Batch = 0,

    /// <summary>SCHED_OTHER, Linux's default: a woken ring thread may preempt the application thread on its core at once.</summary>
    Normal = 1,
}

/// <summary>What the transport does when io_uring cannot be used on this machine.</summary>
public enum IoUringUnavailableBehavior
{
    /// <summary>Log one warning naming the reason and serve with Kestrel's Sockets transport. The default.</summary>
    FallBackToSockets = 0,

    /// <summary>Fail start-up with an exception naming the reason.</summary>
    Throw = 1,
}

/// <summary>Options of the io_uring transport, bindable from configuration (e.g. the "Kestrel:IoUring" section).</summary>
public sealed class IoUringTransportOptions
{
    /// <summary>The environment variable that, set to 1 or true, turns io_uring off without probing (for seccomp profiles that kill on io_uring_setup).</summary>
    public const string DisableEnvironmentVariable = "KESTREL_IOURING_DISABLE";

    /// <summary>
    /// False turns io_uring off without even probing the kernel, and serves with the Sockets transport (some seccomp
    /// profiles kill the process on io_uring_setup instead of failing it). The environment variable
    /// <see cref="DisableEnvironmentVariable"/>=1 does the same. Default true.
    /// </summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Rings, each with its own thread. Default: one per processor available to the process, at most 16.</summary>
    public int RingCount { get; set; } = Math.Min(Environment.ProcessorCount, 16);

    /// <summary>Submission queue entries per ring (a power of two, 16–32768). Default 512.</summary>
    public int SubmissionQueueSize { get; set; } = 512;

    /// <summary>
    /// Completion queue entries per ring (a power of two, at least twice <see cref="SubmissionQueueSize"/>, at most
    /// 65536). Multishot requests stop when the CQ is full, so it is kept large. Default 8192.
    /// </summary>
    public int CompletionQueueSize { get; set; } = 8192;

    /// <summary>Buffers in each ring's provided buffer ring (a power of two, 1–32768). Default 1024.</summary>
    public int ReceiveBufferCount { get; set; } = 1024;

    /// <summary>Size of each provided receive buffer in bytes (256 B–1 MiB). Default 4096.</summary>
    public int ReceiveBufferSize { get; set; } = 4096;

    /// <summary>Registered (fixed) file slots per ring; capped by RLIMIT_NOFILE. Connections beyond it use ordinary descriptors. Default 16384.</summary>
    public int FixedFileSlots { get; set; } = 16384;

    /// <summary>
    /// The most bytes buffered from the network for one connection before receiving pauses (the input pipe's pause
    /// threshold), as in the Sockets transport. Null means no limit. Default 1 MiB.
    /// </summary>
    public long? MaxReadBufferSize { get; set; } = 1024 * 1024;

    /// <summary>
    /// The most bytes the application may buffer for sending before its writes wait (the output pipe's pause
    /// threshold), as in the Sockets transport. Null means no limit. Default 64 KiB.
    /// </summary>
    public long? MaxWriteBufferSize { get; set; } = 64 * 1024;

    /// <summary>Disables Nagle's algorithm on accepted connections. Default true.</summary>
    public bool NoDelay { get; set; } = true;

    /// <summary>The listen backlog. Default 512.</summary>
    public int Backlog { get; set; } = 512;

    /// <summary>
    /// Creates the bound (not yet listening) socket for an endpoint Kestrel binds, as the Sockets transport's option of
    /// the same name does: set SO_REUSEPORT, IP_FREEBIND or IPV6_V6ONLY before binding, or return a socket handed over
    /// by systemd. The transport then listens on it with <see cref="Backlog"/> and accepts from it over io_uring.
    /// Default <see cref="CreateDefaultBoundListenSocket"/>. Not bindable from configuration.
    /// </summary>
    public Func<EndPoint, Socket> CreateBoundListenSocket { get; set; } = CreateDefaultBoundListenSocket;

    /// <summary>
    /// Creates and binds a socket for <paramref name="endpoint"/> the way the transport does by default: TCP for an
    /// <see cref="IPEndPoint"/> (dual mode for <see cref="IPAddress.IPv6Any"/>), a stream socket for a
    /// <see cref="UnixDomainSocketEndPoint"/>, and for a <see cref="FileHandleEndPoint"/> a socket over the handle that
    /// does not own it. A hook can call this and adjust the result, or create its own.
    /// </summary>
    public static Socket CreateDefaultBoundListenSocket(EndPoint endpoint)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        Socket socket;
        switch (endpoint)
        {
            case FileHandleEndPoint fileHandle:
                // Not ours: disposing this Socket leaves the descriptor open, and its options are left alone (as in
                // the Sockets transport).
                return new Socket(new SafeSocketHandle((IntPtr)fileHandle.FileHandle, ownsHandle: false));
            case UnixDomainSocketEndPoint:
                socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                break;
            case IPEndPoint ip:
                socket = new Socket(ip.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                if (ip.Address.Equals(IPAddress.IPv6Any))
                {
                    socket.DualMode = true;
                }
                break;
            default:
                throw new NotSupportedException($"The io_uring transport cannot bind {endpoint.GetType().Name} {endpoint}.");
        }

        try
        {
            socket.Bind(endpoint);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return socket;
    }

    /// <summary>
    /// Sends of at least this many bytes use IORING_OP_SEND_ZC (zero-copy); 0 turns zero-copy off. Where the kernel
    /// reports that it copied anyway (loopback, some NICs), each ring switches zero-copy off by itself; to a peer on
    /// this host, response memory never goes zero-copy (only the registered send buffers do). Default 0 (off):
    /// it pays only for large responses on real NICs.
    /// </summary>
    public int ZeroCopySendThreshold { get; set; }

    /// <summary>
    /// Tests only: pipe memory goes zero-copy to peers on this host too, which the transport otherwise never does (see
    /// <c>ZeroCopyPolicy</c>). Default false.
    /// </summary>
    internal bool ZeroCopyToLocalPeers { get; set; }

    /// <summary>Where application code runs. Default <see cref="ApplicationSchedulingMode.ThreadPool"/>.</summary>
    public ApplicationSchedulingMode ApplicationScheduling { get; set; } = ApplicationSchedulingMode.ThreadPool;

    /// <summary>How flushed bytes reach the socket: directly from the flushing thread, or always through the ring. Default <see cref="SendPathMode.Direct"/>.</summary>
    public SendPathMode SendPath { get; set; } = SendPathMode.Direct;

    /// <summary>
    /// How the kernel schedules the ring threads: <see cref="RingThreadPolicy.Batch"/> (the default) lets the
    /// application's threads finish what they are doing before a woken ring thread runs; <see cref="RingThreadPolicy.Normal"/>
    /// lets a woken ring thread preempt them. Where the kernel refuses SCHED_BATCH the ring logs why and runs normally.
    /// </summary>
    public RingThreadPolicy RingThreadPolicy { get; set; } = RingThreadPolicy.Batch;

    /// <summary>What happens when io_uring is unusable. Default <see cref="IoUringUnavailableBehavior.FallBackToSockets"/>.</summary>
    public IoUringUnavailableBehavior WhenUnavailable { get; set; } = IoUringUnavailableBehavior.FallBackToSockets;

    /// <summary>
    /// When a connection ends in error or is aborted, send FIN instead of RST, like the Sockets transport's FinOnError
    /// switch. Defaults to the AppContext switch "Microsoft.AspNetCore.Server.Kestrel.FinOnError", else false.
    /// </summary>
    public bool FinOnError { get; set; } = AppContext.TryGetSwitch("Microsoft.AspNetCore.Server.Kestrel.FinOnError", out bool finOnError) && finOnError;

    /// <summary>
    /// SQPOLL mode: a kernel thread per ring polls the submission queue, so submitting needs no system call while it
    /// is busy. It burns a CPU while polling: worth it only with cores to spare (dedicated cores, high load). It
    /// excludes DEFER_TASKRUN. Where the kernel refuses it, the ring falls back to the default mode with a warning.
    /// Default false.
    /// </summary>
    public bool SqPoll { get; set; }

    /// <summary>With <see cref="SqPoll"/>: milliseconds the kernel thread keeps polling an idle ring before it sleeps. Default 1000.</summary>
    public int SqPollIdleMilliseconds { get; set; } = 1000;

    /// <summary>With <see cref="SqPoll"/>: pin ring i's kernel thread to CPU (SqPollCpu + i) mod the CPU count; -1 leaves it unpinned. Default -1.</summary>
    public int SqPollCpu { get; set; } = -1;

    /// <summary>
    /// Incremental consumption of provided buffers (IOU_PBUF_RING_INC, Linux 6.12): a receive buffer is filled by
    /// several completions instead of one, so small requests waste less of it. Used only where the kernel accepts it.
    /// Default false.
    /// </summary>
    public bool IncrementalReceiveBuffers { get; set; }

    /// <summary>
    /// Bytes of registered (fixed) send memory per ring, in 64 KiB chunks; 0 (the default) turns it off. With
    /// zero-copy on (<see cref="ZeroCopySendThreshold"/> &gt; 0), sends of at least the threshold are copied into a
    /// registered chunk and sent with SEND_ZC + IORING_RECVSEND_FIXED_BUF: no per-send page pinning or RLIMIT_MEMLOCK
    /// charge, and the response memory goes back to the pool before the kernel's notification, so the next send
    /// need not wait for it. The registration is charged to RLIMIT_MEMLOCK once; where it fails the ring sends
    /// without it and logs why.
    /// </summary>
    public int RegisteredSendBufferSize { get; set; }

    /// <summary>Test seam: pretend io_uring_setup fails with this errno.</summary>
    internal int? SimulatedSetupErrno { get; set; }

    /// <summary>Test seam: pretend the process runs on this operating system (e.g. "Windows") instead of Linux.</summary>
    internal string? SimulatedOperatingSystem { get; set; }

    /// <summary>True when the environment variable turns io_uring off.</summary>
    internal static bool DisabledByEnvironment()
    {
        string? value = Environment.GetEnvironmentVariable(DisableEnvironmentVariable);
        return value is not null && (value == "1" || value.Equals("true", StringComparison.OrdinalIgnoreCase));
    }
}
