using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using static Kestrel.Transport.IoUring.Tests.Semantics.TransportUnderTest;

namespace Kestrel.Transport.IoUring.Tests.Semantics;

/// <summary>
/// What Kestrel's own functional tests assert of a transport's log category: while clients close (FIN), reset (RST)
/// or abort — before any request, between requests, in the middle of a request, in the middle of a response — not one
/// entry of the category is above Debug, from the host's start to its end. Sockets is the reference; the io_uring
/// start-up line lives in its own category, so it does not count against this one.
/// </summary>
public sealed class ConnectionCategoryQuietTests
{
    public enum Moment { BeforeRequest, BetweenRequests, MidRequest, MidResponse }

    public enum Ending { Fin, Rst }

    public static TheoryData<string, Moment, Ending> Scenarios()
    {
        var data = new TheoryData<string, Moment, Ending>();
        foreach (string transport in new[] { IoUringRing, Sockets })
            foreach (Moment moment in Enum.GetValues<Moment>())
                foreach (Ending ending in Enum.GetValues<Ending>())
                    data.Add(transport, moment, ending);
        return data;
    }

    private static void MapEndpoints(WebApplication app)
    {
        app.MapGet("/", (HttpContext c) =>
        {
            c.Response.ContentLength = 5;
            return c.Response.WriteAsync("hello");
        });
        // Streams until the client goes away.
        app.MapGet("/stream", async (HttpContext c) =>
        {
            var chunk = new byte[64 * 1024];
            while (!c.RequestAborted.IsCancellationRequested)
            {
                await c.Response.Body.WriteAsync(chunk, c.RequestAborted);
            }
        });
    }

    private static int ConnectionStops(IoUringTestServer server)
        => server.Logs.Records.Count(r => r.Category.StartsWith("Microsoft.AspNetCore.Server.Kestrel", StringComparison.Ordinal)
            && r.EventId.Name == "ConnectionStop");

    [Theory]
    [MemberData(nameof(Scenarios))]
    public async Task NothingAboveDebugInTheConnectionCategoryWhileClientsCloseResetOrAbort(string transport, Moment moment, Ending ending)
    {
        await using var server = await StartAsync(transport, MapEndpoints);
        using (var s = RawSocket.Connect(server.Port))
        {
            switch (moment)
            {
                case Moment.BetweenRequests:
                    s.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8);
                    Assert.Equal("hello", RawSocket.ReadResponse(s).Body);
                    break;
                case Moment.MidRequest:
                    s.Send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nfirst bytes"u8);
                    break;
                case Moment.MidResponse:
                    s.Send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"u8);
                    var buffer = new byte[16 * 1024];
                    Assert.True(s.Receive(buffer) > 0, "the response never started");
                    break;
            }
            if (ending == Ending.Rst)
            {
                RawSocket.Reset(s);
            }
            else
            {
                s.Shutdown(SocketShutdown.Both);
            }
        }

        // The connection is over for Kestrel once it logs ConnectionStop; everything the transport had to say about it is in.
        await PollAsync(() => ConnectionStops(server) >= 1 ? "" : null, "Kestrel's ConnectionStop");
        await server.StopAsync();

        string category = CategoryOf(transport);
        var entries = server.Logs.ForCategory(category).ToList();
        Assert.NotEmpty(entries); // the category was collected: the transport wrote its Debug events of this connection
        var loud = entries.Where(r => r.Level > LogLevel.Debug).Select(r => $"{r.Level} {r.EventId}: {r.Message}").ToList();
        Assert.True(loud.Count == 0, $"{category} above Debug: " + string.Join(" | ", loud));
        if (transport == IoUringRing)
        {
            Assert.Contains(server.Logs.Records, r => r.Category == IoUringLifetimeCategory && r.EventId.Name == "TransportStarted");
        }
    }
}
