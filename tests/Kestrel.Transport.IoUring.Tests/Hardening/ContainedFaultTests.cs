using System.Buffers;
using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Security.Cryptography;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Protocols;
using Kestrel.Transport.IoUring.Transport;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Tests.Hardening;

/// <summary>
/// An exception from the transport's own code while serving one connection (a queued work item, a completion
/// handler) ends that connection with an RST and an Error log; the ring and its other connections carry on.
/// </summary>
[Collection(HeavyProtocolCollection.Name)]
public sealed class ContainedFaultTests
{
    [Fact]
    public async Task FailingWorkItemEndsOnlyItsConnection()
    {
        var seen = new ConcurrentQueue<IoUringConnection>();
        await using var server = await StartAsync(seen);
        await using var victim = await ConnectAndIdentifyAsync(server);
        seen.TryDequeue(out var victimConnection);
        await using var bystander = await ConnectAndIdentifyAsync(server);

        server.Factory.Rings[0].Post(static _ => throw new InvalidOperationException("a test's failing work item"), victimConnection);

        await AssertOnlyVictimEndedAsync(server, victim, bystander);
    }

    [Fact]
    public Task FailingCompletionHandlerEndsOnlyItsConnection() => FailOneCopyAsync();

    /// <summary>
    /// A receive whose copy into the input pipe throws still gives its provided buffer back. The ring has one buffer:
    /// lost, every later receive of the ring ends with ENOBUFS and nothing arrives; in incremental mode, a fill mark
    /// left behind the kernel's would make the next completion in that buffer read the victim's old bytes.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public Task ACopyThatThrowsGivesItsReceiveBufferBack(bool incremental) => FailOneCopyAsync(o =>
    {
        o.ReceiveBufferCount = 1;
        o.ReceiveBufferSize = incremental ? 4096 : 256;
        o.IncrementalReceiveBuffers = incremental;
    }, async bystander =>
    {
        // Many times the ring's whole buffer: every byte must arrive, in order, through that one buffer.
        var random = new Random(11);
        for (int i = 0; i < 4; i++)
        {
            var body = new byte[16 * 1024];
            random.NextBytes(body);
            await bystander.SendAsync($"POST /sha HTTP/1.1\r\nHost: x\r\nContent-Length: {body.Length}\r\n\r\n");
            await bystander.SendAsync(body);
            var response = await bystander.ReadResponseAsync().WaitAsync(TimeSpan.FromSeconds(15));
            Assert.Equal(Convert.ToHexString(SHA256.HashData(body)), response.Body);
        }
    });

    /// <summary>
    /// The victim's next bytes arrive in a recv completion whose handler needs a pool block to copy them into the
    /// input pipe: the pool refuses. Only the victim ends; then <paramref name="afterwards"/> runs with the bystander.
    /// </summary>
    private static async Task FailOneCopyAsync(Action<IoUringTransportOptions>? transport = null, Func<RawHttpConnection, Task>? afterwards = null)
    {
        var pool = new RefusingMemoryPool();
        await using var server = await StartAsync(new(), services => services.AddSingleton<IMemoryPoolFactory<byte>>(pool), transport);
        await using var victim = await ConnectAndIdentifyAsync(server);
        await using var bystander = await ConnectAndIdentifyAsync(server);

        pool.RefuseNextRentOnRingThread();
        await victim.SendAsync("GET /who HTTP/1.1\r\nHost: x\r\n\r\n");
        await AssertOnlyVictimEndedAsync(server, victim, bystander);
        Assert.True(pool.Refused);
        if (afterwards is not null)
        {
            await afterwards(bystander);
        }
    }

    private static Task<IoUringTestServer> StartAsync(ConcurrentQueue<IoUringConnection> seen, Action<IServiceCollection>? services = null,
        Action<IoUringTransportOptions>? transport = null)
        => IoUringTestServer.StartAsync(app =>
        {
            app.MapGet("/", () => "hello");
            app.MapPost("/sha", async (HttpContext c) =>
            {
                using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
                var buffer = new byte[4096];
                int n;
                while ((n = await c.Request.Body.ReadAsync(buffer)) > 0)
                {
                    hash.AppendData(buffer, 0, n);
                }
                string hex = Convert.ToHexString(hash.GetHashAndReset());
                c.Response.ContentLength = hex.Length;
                await c.Response.WriteAsync(hex);
            });
            app.MapGet("/who", (HttpContext c) =>
            {
                var connection = (IoUringConnection)c.Features.Get<IIoUringConnectionFeature>()!;
                seen.Enqueue(connection);
                c.Response.ContentLength = 2;
                return c.Response.WriteAsync("ok");
            });
        }, configureTransport: o =>
        {
            o.RingCount = 1;
            transport?.Invoke(o);
        }, configureServices: services);

    private static async Task<RawHttpConnection> ConnectAndIdentifyAsync(IoUringTestServer server)
    {
        var c = await RawHttpConnection.ConnectAsync(server.Port);
        await c.SendAsync("GET /who HTTP/1.1\r\nHost: x\r\n\r\n");
        Assert.Equal("ok", (await c.ReadResponseAsync()).Body);
        return c;
    }

    private static async Task AssertOnlyVictimEndedAsync(IoUringTestServer server, RawHttpConnection victim, RawHttpConnection bystander)
    {
        var e = await Assert.ThrowsAnyAsync<SocketException>(() => victim.ReadsEndOfStreamAsync().WaitAsync(TimeSpan.FromSeconds(15)));
        Assert.Equal(SocketError.ConnectionReset, e.SocketErrorCode);

        // The same ring serves the other connection and new ones.
        await bystander.SendAsync("GET /who HTTP/1.1\r\nHost: x\r\n\r\n");
        Assert.Equal("ok", (await bystander.ReadResponseAsync().WaitAsync(TimeSpan.FromSeconds(15))).Body);
        using var client = server.CreateClient();
        Assert.Equal("hello", await client.GetStringAsync("/"));

        Assert.Equal(RingState.Running, server.Factory.Rings[0].State);
        var failed = Assert.Single(server.Logs.Records, r => r.EventId.Name == "ConnectionFailed");
        Assert.Equal(LogLevel.Error, failed.Level);
        Assert.NotNull(failed.Exception);
        Assert.DoesNotContain(server.Logs.Records, r => r.EventId.Name == "RingFailed");
    }

    /// <summary>The shared array pool, except that it refuses one rent on a ring thread when told to (as a pool out of memory would).</summary>
    private sealed class RefusingMemoryPool : MemoryPool<byte>, IMemoryPoolFactory<byte>
    {
        private int _refuseNext;
        private int _refused;

        public bool Refused => Volatile.Read(ref _refused) == 1;

        public override int MaxBufferSize => Shared.MaxBufferSize;

        public void RefuseNextRentOnRingThread() => Volatile.Write(ref _refuseNext, 1);

        public MemoryPool<byte> Create(MemoryPoolOptions? options = null) => this;

        public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
        {
            if (Thread.CurrentThread.Name?.StartsWith("io_uring ring", StringComparison.Ordinal) == true && Interlocked.Exchange(ref _refuseNext, 0) == 1)
            {
                Volatile.Write(ref _refused, 1);
                throw new InsufficientMemoryException("a test's memory pool refused");
            }
            return Shared.Rent(minBufferSize);
        }

        protected override void Dispose(bool disposing)
        {
        }
    }
}
