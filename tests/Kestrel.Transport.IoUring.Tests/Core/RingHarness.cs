using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Tests.Core;

/// <summary>
/// A ring owned by the test's thread (SINGLE_ISSUER: tests that use it stay synchronous), with helpers to wait for
/// completions under a deadline so that a broken test fails instead of hanging.
/// </summary>
internal sealed unsafe class RingHarness : IDisposable
{
    private static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(10);
    private readonly List<IoUringCqe> _backlog = new();
    private readonly IoUringCqe[] _batch = new IoUringCqe[256];

    public RingHarness(uint sqEntries = 64, uint cqEntries = 256, SetupFlags flags = RingOptions.DefaultFlags)
    {
        Ring = Ring.Create(new RingOptions { SubmissionQueueEntries = sqEntries, CompletionQueueEntries = cqEntries, Flags = flags });
    }

    public Ring Ring { get; }

    public IoUringSqe* Sqe() => Ring.GetSqe();

    /// <summary>Submits, then waits until a completion matching <paramref name="match"/> arrives; others are kept for later calls.</summary>
    public IoUringCqe WaitFor(Func<IoUringCqe, bool> match, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? DefaultTimeout);
        while (true)
        {
            int i = _backlog.FindIndex(c => match(c));
            if (i >= 0)
            {
                var found = _backlog[i];
                _backlog.RemoveAt(i);
                return found;
            }
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"no matching completion; {_backlog.Count} others seen: " +
                    string.Join(", ", _backlog.Take(10).Select(c => $"{UserData.Decode(c.UserData)} res={c.Result} flags={c.Flags}")));
            }
            Pump(waitFor: 1, timeoutNanoseconds: 50_000_000);
        }
    }

    public IoUringCqe WaitFor(ulong userData, TimeSpan? timeout = null) => WaitFor(c => c.UserData == userData, timeout);

    /// <summary>Submits and collects whatever completions are ready (waiting up to the timeout for at least one).</summary>
    public void Pump(uint waitFor = 0, long timeoutNanoseconds = 0)
    {
        int r = Ring.SubmitAndWait(waitFor, timeoutNanoseconds);
        Assert.True(r >= 0 || r == -Errno.EBUSY || r == -Errno.EAGAIN, $"io_uring_enter failed: {Errno.Name(r)}");
        // A corrupted ring (head past tail) would make "ready" wrap to ~4 billion: fail instead of spinning on it.
        uint ready = Ring.ReadyCompletions;
        Assert.True(ready <= Ring.CompletionQueueEntries, $"{ready} completions ready in a CQ of {Ring.CompletionQueueEntries}: head and tail are inconsistent");
        int n, taken = 0;
        while (taken < ready && (n = Ring.ReadCompletions(_batch.AsSpan(0, (int)Math.Min((uint)_batch.Length, ready - (uint)taken)))) > 0)
        {
            _backlog.AddRange(_batch.AsSpan(0, n).ToArray());
            taken += n;
        }
    }

    /// <summary>Takes every completion collected so far.</summary>
    public List<IoUringCqe> TakeAll()
    {
        var all = new List<IoUringCqe>(_backlog);
        _backlog.Clear();
        return all;
    }

    public void Dispose() => Ring.Dispose();
}

/// <summary>
/// The core tests that count this process's descriptors or push a lot of data run alone (xunit runs collections with
/// DisableParallelization after the parallel ones, one test at a time), so no other test opens or closes fds meanwhile.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class CoreSerialCollection
{
    public const string Name = "io_uring core (serial)";
}

/// <summary>Counts the entries of /proc/self/fd.</summary>
internal static class OpenDescriptors
{
    public static int Count() => Directory.GetFiles("/proc/self/fd").Length;

    /// <summary>
    /// Whether the count comes down to at most <paramref name="expected"/> within two seconds. A runtime thread (the
    /// test host's pipes, a finishing test server) may briefly hold an extra fd; a leak keeps it there for good.
    /// </summary>
    public static bool SettlesAtMost(int expected, out int last)
    {
        int seen = Count();
        bool settled = seen <= expected || SpinWait.SpinUntil(() => (seen = Count()) <= expected, TimeSpan.FromSeconds(2));
        last = seen;
        return settled;
    }

    /// <summary>True when <paramref name="fd"/> is open in this process.</summary>
    public static bool IsOpen(int fd) => Path.Exists($"/proc/self/fd/{fd}");
}

/// <summary>Connected loopback TCP sockets for the core tests.</summary>
internal static class Loopback
{
    public static (Socket Client, Socket Server) TcpPair()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        client.Connect(listener.LocalEndPoint!);
        var server = listener.Accept();
        server.NoDelay = true;
        return (client, server);
    }

    public static Socket Listener(int backlog = 64)
    {
        var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(backlog);
        return listener;
    }

    public static int Fd(Socket socket) => (int)socket.Handle;

    /// <summary>
    /// Connects a client to <paramref name="listener"/> and lets the ring accept it with a single ACCEPT, so that the
    /// server side is a raw fd that no <see cref="Socket"/> owns: a test may close it through the ring.
    /// </summary>
    public static unsafe (Socket Client, int ServerFd) ClientAndRawServerFd(RingHarness h, Socket listener, ulong userData)
    {
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        client.Connect(listener.LocalEndPoint!);
        SqePreparation.PrepareAccept(h.Sqe(), Fd(listener), userData);
        var cqe = h.WaitFor(userData);
        Assert.True(cqe.Result >= 0, $"accept failed: {Errno.Name(cqe.Result)}");
        Assert.False(cqe.HasMore, "a single accept posts one completion");
        return (client, cqe.Result);
    }

    /// <summary>True when the peer of <paramref name="socket"/> closed its side: a read returns 0 (EOF).</summary>
    public static bool SeesEof(Socket socket)
    {
        socket.ReceiveTimeout = 10_000;
        return socket.Receive(new byte[16]) == 0;
    }

    /// <summary>Reads exactly <paramref name="count"/> bytes (blocking, with a receive timeout so a bug fails the test).</summary>
    public static byte[] ReadExactly(Socket socket, int count)
    {
        socket.ReceiveTimeout = 10_000;
        var data = new byte[count];
        int got = 0;
        while (got < count)
        {
            int n = socket.Receive(data, got, count - got, SocketFlags.None);
            Assert.True(n > 0, $"peer closed after {got} of {count} bytes");
            got += n;
        }
        return data;
    }
}
