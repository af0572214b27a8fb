using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;

namespace Kestrel.Transport.IoUring.Tests.Semantics;

/// <summary>Every endpoint type the Sockets transport binds, bound by io_uring with the same results.</summary>
public sealed class EndpointBindingTests
{
    private static void MapEndpointsEcho(WebApplication app) => app.MapGet("/", (HttpContext c) =>
        $"{c.Features.Get<IIoUringConnectionFeature>() is not null}|{c.Connection.RemoteIpAddress}|{c.Connection.RemotePort}|{c.Connection.LocalIpAddress}|{c.Connection.LocalPort}");

    /// <summary>One GET over a socket connected to <paramref name="target"/>; also returns the client's local port.</summary>
    private static async Task<(string Body, int ClientPort)> GetWithPortAsync(EndPoint target, AddressFamily? family = null)
    {
        int clientPort = 0;
        using var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var s = new Socket(family ?? target.AddressFamily, SocketType.Stream,
                    target is UnixDomainSocketEndPoint ? ProtocolType.Unspecified : ProtocolType.Tcp);
                await s.ConnectAsync(target, ct);
                clientPort = (s.LocalEndPoint as IPEndPoint)?.Port ?? 0;
                return new NetworkStream(s, ownsSocket: true);
            },
        };
        using var client = new HttpClient(handler);
        return (await client.GetStringAsync("http://localhost/"), clientPort);
    }

    private static async Task<string> GetAsync(EndPoint target) => (await GetWithPortAsync(target)).Body;

    [Fact]
    public async Task UnixDomainSocket()
    {
        string path = Path.Combine(Path.GetTempPath(), $"iouring-{Guid.NewGuid():N}.sock");
        try
        {
            await using var server = await IoUringTestServer.StartAsync(MapEndpointsEcho, o => o.ListenUnixSocket(path));
            string body = await GetAsync(new UnixDomainSocketEndPoint(path));
            Assert.StartsWith("True|", body); // served over io_uring; the peer of a Unix socket has no IP
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>What happens to a Unix socket's file: during serving, after stop, and when a stale file is in the way.</summary>
    private static async Task<string> UnixSocketFileLifecycleAsync(string transport)
    {
        string path = Path.Combine(Path.GetTempPath(), $"iouring-{Guid.NewGuid():N}.sock");
        try
        {
            var server = await TransportUnderTest.StartAsync(transport, MapEndpointsEcho, o => o.ListenUnixSocket(path));
            bool whileServing = File.Exists(path);
            string body = await GetAsync(new UnixDomainSocketEndPoint(path));
            Assert.StartsWith(transport == TransportUnderTest.IoUringRing ? "True|" : "False|", body);
            await server.DisposeAsync();
            bool afterStop = File.Exists(path);

            // A stale socket file (nobody listening) left at the path. Socket.Dispose unlinks the path it bound, so bind
            // elsewhere and rename the socket file into place.
            if (!afterStop)
            {
                string other = path + ".tmp";
                using var stale = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                stale.Bind(new UnixDomainSocketEndPoint(other));
                File.Move(other, path);
            }
            Assert.True(File.Exists(path));
            string restart;
            try
            {
                await using var again = await TransportUnderTest.StartAsync(transport, MapEndpointsEcho, o => o.ListenUnixSocket(path));
                restart = "serves: " + (await GetAsync(new UnixDomainSocketEndPoint(path))).Split('|')[0];
            }
            catch (Exception e)
            {
                restart = $"{e.GetType().Name}/{e.InnerException?.GetType().Name}";
            }
            return $"while serving {whileServing}, after stop {afterStop}, stale file: {restart}";
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task UnixSocketFileIsHandledAsSocketsHandlesIt()
    {
        string sockets = await UnixSocketFileLifecycleAsync(TransportUnderTest.Sockets);
        string ioUring = await UnixSocketFileLifecycleAsync(TransportUnderTest.IoUringRing);
        Assert.Equal(sockets.Replace("serves: False", "serves: True"), ioUring);
        Assert.Equal("while serving True, after stop False, stale file: IOException/AddressInUseException", ioUring);
    }

    [Fact]
    public async Task Ipv6LoopbackReportsRealEndPoints()
    {
        await using var server = await IoUringTestServer.StartAsync(MapEndpointsEcho, o => o.Listen(IPAddress.IPv6Loopback, 0));
        var (body, clientPort) = await GetWithPortAsync(new IPEndPoint(IPAddress.IPv6Loopback, server.Port));
        Assert.Equal($"True|::1|{clientPort}|::1|{server.Port}", body);
    }

    [Fact]
    public async Task Ipv6AnyIsDualModeAndReportsRealEndPoints()
    {
        await using var server = await IoUringTestServer.StartAsync(MapEndpointsEcho, o => o.Listen(IPAddress.IPv6Any, 0));
        int port = server.Port;
        Assert.NotEqual(0, port);

        var (viaV4, v4Port) = await GetWithPortAsync(new IPEndPoint(IPAddress.Loopback, port));
        Assert.Equal($"True|::ffff:127.0.0.1|{v4Port}|::ffff:127.0.0.1|{port}", viaV4);

        var (viaV6, v6Port) = await GetWithPortAsync(new IPEndPoint(IPAddress.IPv6Loopback, port));
        Assert.Equal($"True|::1|{v6Port}|::1|{port}", viaV6);
    }

    [Fact]
    public async Task PortZeroReportsTheBoundPort()
    {
        await using var server = await IoUringTestServer.StartAsync(MapEndpointsEcho);
        Assert.NotEqual(0, server.Port);
        string body = await GetAsync(new IPEndPoint(IPAddress.Loopback, server.Port));
        Assert.EndsWith($"|127.0.0.1|{server.Port}", body);
    }

    [Fact]
    public async Task ATakenPortRaisesAddressInUse()
    {
        using var taken = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        taken.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        taken.Listen();
        int port = ((IPEndPoint)taken.LocalEndPoint!).Port;

        var e = await Assert.ThrowsAsync<IOException>(() => IoUringTestServer.StartAsync(configureKestrel: o => o.Listen(IPAddress.Loopback, port)));
        Assert.IsType<AddressInUseException>(e.InnerException);
    }

    [Fact]
    public async Task FileHandleEndPointServesAndIsNotClosedByTheTransport()
    {
        using var listen = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listen.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listen.Listen(16);
        var endPoint = (IPEndPoint)listen.LocalEndPoint!;

        var server = await IoUringTestServer.StartAsync(MapEndpointsEcho, o => o.ListenHandle((ulong)listen.Handle));
        try
        {
            Assert.StartsWith("True|127.0.0.1|", await GetAsync(endPoint));
        }
        finally
        {
            await server.DisposeAsync();
        }

        // Not ours: still open and listening after the server is gone.
        Assert.True(File.Exists($"/proc/self/fd/{listen.Handle}"));
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(endPoint);
        using var accepted = listen.Accept();
        Assert.Equal(client.LocalEndPoint, accepted.RemoteEndPoint);
    }
}
