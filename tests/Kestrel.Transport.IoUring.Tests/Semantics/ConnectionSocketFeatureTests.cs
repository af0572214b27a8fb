using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Transport;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;

namespace Kestrel.Transport.IoUring.Tests.Semantics;

/// <summary>
/// IConnectionSocketFeature, as the Sockets transport offers it (Kestrel's own functional test reads it): a Socket
/// over the connection's descriptor for socket options and endpoints, made only when asked for, that does not own
/// the descriptor: the connection keeps working after the application set options, and closes as usual.
/// </summary>
public sealed class ConnectionSocketFeatureTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(15);

    /// <summary>What the application saw through the feature on one request.</summary>
    private sealed record Observed(
        Socket Socket, IIoUringConnectionFeature Connection, int Descriptor, string? DescriptorTarget, ProtocolType Protocol,
        bool NoDelayBefore, bool NoDelayAfter, bool KeepAlive, int KeepAliveSeconds,
        EndPoint? SocketLocal, EndPoint? SocketRemote, IPAddress? RemoteIp, int RemotePort, IPAddress? LocalIp, int LocalPort);

    /// <summary>"/socket" uses the feature the way an application does: options set and read back, endpoints read.</summary>
    private static void MapSocketEndpoints(WebApplication app, ConcurrentQueue<Observed> observed, ConcurrentQueue<IIoUringConnectionFeature> unused)
    {
        app.MapGet("/socket", (HttpContext c) =>
        {
            Socket socket = c.Features.Get<IConnectionSocketFeature>()!.Socket;
            bool noDelayBefore = false, noDelayAfter = false, keepAlive = false;
            int keepAliveSeconds = 0;
            if (socket.ProtocolType == ProtocolType.Tcp)
            {
                noDelayBefore = socket.NoDelay;
                socket.NoDelay = false;
                noDelayAfter = socket.NoDelay;
                socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, true);
                socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveTime, 77);
                keepAlive = (int)socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive)! != 0;
                keepAliveSeconds = (int)socket.GetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveTime)!;
            }
            int fd = (int)socket.Handle;
            observed.Enqueue(new Observed(socket, c.Features.Get<IIoUringConnectionFeature>()!, fd,
                new FileInfo($"/proc/self/fd/{fd}").LinkTarget, socket.ProtocolType, noDelayBefore, noDelayAfter,
                keepAlive, keepAliveSeconds, socket.LocalEndPoint, socket.RemoteEndPoint,
                c.Connection.RemoteIpAddress, c.Connection.RemotePort, c.Connection.LocalIpAddress, c.Connection.LocalPort));
            return RawSocket.AnswerAsync(c, "ok");
        });
        app.MapGet("/", (HttpContext c) =>
        {
            unused.Enqueue(c.Features.Get<IIoUringConnectionFeature>()!);
            return RawSocket.AnswerAsync(c, "hello");
        });
    }

    /// <summary>Waits until the transport has closed every descriptor of its connections (the kernel confirmed each close).</summary>
    private static async Task WaitForNoOpenConnectionsAsync(IoUringTestServer server)
    {
        DescriptorBudget budget = server.Factory.Rings[0].Context.Descriptors;
        var deadline = DateTime.UtcNow + Bound;
        while (budget.Open != 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10); // the close completes in the ring: nothing to await from here
        }
        Assert.Equal(0, budget.Open);
    }

    /// <summary>The closed connection's descriptor is gone (its number may already serve another socket, not this one).</summary>
    private static void AssertDescriptorClosed(Observed seen)
    {
        Assert.StartsWith("socket:[", seen.DescriptorTarget);
        string? now = null;
        try
        {
            now = new FileInfo($"/proc/self/fd/{seen.Descriptor}").LinkTarget;
        }
        catch (IOException)
        {
            // closed while we looked
        }
        Assert.NotEqual(seen.DescriptorTarget, now);
    }

    [Fact]
    public async Task OptionsSetThroughTheSocketApplyAndTheConnectionKeepsWorkingAndClosesCleanly()
    {
        var observed = new ConcurrentQueue<Observed>();
        await using var server = await IoUringTestServer.StartAsync(app => MapSocketEndpoints(app, observed, new()));

        using (var client = RawSocket.Connect(server.Port))
        {
            Assert.Equal("ok", RawSocket.Get(client, "/socket"));
            for (int i = 0; i < 4; i++)
            {
                Assert.Equal("hello", RawSocket.Get(client, "/"));
            }
            Assert.True(observed.TryDequeue(out var seen));

            Assert.Equal(ProtocolType.Tcp, seen.Protocol);
            Assert.True(seen.NoDelayBefore, "TCP_NODELAY read through the Socket is not the transport's (on by default)");
            Assert.False(seen.NoDelayAfter);
            Assert.True(seen.KeepAlive);
            Assert.Equal(77, seen.KeepAliveSeconds);
            // The Socket is this connection's: its endpoints are the client's, seen from the server.
            Assert.Equal(client.LocalEndPoint, seen.SocketRemote);
            Assert.Equal(client.RemoteEndPoint, seen.SocketLocal);
            Assert.Equal(((IPEndPoint)seen.SocketRemote!).Address, seen.RemoteIp);
            Assert.Equal(((IPEndPoint)seen.SocketRemote!).Port, seen.RemotePort);
            Assert.Equal(((IPEndPoint)seen.SocketLocal!).Address, seen.LocalIp);
            Assert.Equal(((IPEndPoint)seen.SocketLocal!).Port, seen.LocalPort);

            // The client ends the connection: the server answers with its FIN (a reset would throw here).
            client.Shutdown(SocketShutdown.Send);
            Assert.Empty(RawSocket.ReadToEnd(client));
            await WaitForNoOpenConnectionsAsync(server);
            AssertDescriptorClosed(seen);
            // Disposed with the connection: a late use cannot reach a descriptor number the kernel reuses.
            Assert.Throws<ObjectDisposedException>(() => seen.Socket.NoDelay);
        }
    }

    [Fact]
    public async Task TheSocketIsMadeOnlyWhenAskedFor()
    {
        var observed = new ConcurrentQueue<Observed>();
        var unused = new ConcurrentQueue<IIoUringConnectionFeature>();
        await using var server = await IoUringTestServer.StartAsync(app => MapSocketEndpoints(app, observed, unused));

        using var plain = RawSocket.Connect(server.Port);
        Assert.Equal("hello", RawSocket.Get(plain, "/"));
        using var asking = RawSocket.Connect(server.Port);
        Assert.Equal("ok", RawSocket.Get(asking, "/socket"));

        Assert.True(unused.TryDequeue(out var plainConnection));
        Assert.True(observed.TryDequeue(out var seen));
        Assert.False(((IoUringConnection)plainConnection).HasSocket, "a Socket was made for a connection that never asked for one");
        Assert.True(((IoUringConnection)seen.Connection).HasSocket);
    }

    [Fact]
    public async Task UnixSocketConnectionsOfferItTooAndTheListenersFileStays()
    {
        string path = Path.Combine(Path.GetTempPath(), $"iouring-socketfeature-{Guid.NewGuid():N}.sock");
        var observed = new ConcurrentQueue<Observed>();
        try
        {
            await using var server = await IoUringTestServer.StartAsync(app => MapSocketEndpoints(app, observed, new()),
                o => o.ListenUnixSocket(path));
            using (var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 15_000 })
            {
                client.Connect(new UnixDomainSocketEndPoint(path));
                Assert.Equal("ok", RawSocket.Get(client, "/socket"));
                Assert.True(observed.TryDequeue(out var seen));
                Assert.Equal(AddressFamily.Unix, seen.Socket.AddressFamily);
                Assert.Equal(path, seen.SocketLocal?.ToString());
                client.Shutdown(SocketShutdown.Send);
                Assert.Empty(RawSocket.ReadToEnd(client));
                await WaitForNoOpenConnectionsAsync(server);
                AssertDescriptorClosed(seen);
            }

            // Disposing the connection's Socket removed nothing: the listener's file is there and serves.
            Assert.True(File.Exists(path), "the listening socket's file is gone");
            using var next = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 15_000 };
            next.Connect(new UnixDomainSocketEndPoint(path));
            Assert.Equal("hello", RawSocket.Get(next, "/"));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
