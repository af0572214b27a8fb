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
        int n;
        while ((n = Ring.ReadCompletions(_batch)) > 0)
        {
            _backlog.AddRange(_batch.AsSpan(0, n).ToArray());
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
