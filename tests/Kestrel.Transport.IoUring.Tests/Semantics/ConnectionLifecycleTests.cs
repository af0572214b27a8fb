using System.Net;
using System.Net.Sockets;
using System.Text;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using static Kestrel.Transport.IoUring.Tests.Semantics.TransportUnderTest;

namespace Kestrel.Transport.IoUring.Tests.Semantics;

/// <summary>
/// FIN, RST, resets and aborts, observed from raw client sockets and from the transport's log events (which reuse
/// the Sockets transport's ids and names). Each scenario runs over io_uring and, as the reference, over Sockets.
/// </summary>
public sealed class ConnectionLifecycleTests
{
    private static void MapHello(WebApplication app) => app.MapGet("/", () => "hello");

    private static async Task AssertStillServesAsync(IoUringTestServer server)
    {
        using var client = server.CreateClient();
        Assert.Equal("hello", await client.GetStringAsync("/"));
    }

    /// <summary>Kestrel logged ConnectionStart: the connection was accepted and handed to Kestrel.</summary>
    private static Task WaitForConnectionStartAsync(IoUringTestServer server, int count = 1)
        => PollAsync(() => server.Logs.Records.Count(r => r.Category.StartsWith("Microsoft.AspNetCore.Server.Kestrel", StringComparison.Ordinal)
            && r.EventId.Name == "ConnectionStart") >= count ? "" : null, "Kestrel's ConnectionStart");

    private sealed record HalfCloseOutcome(string Handler, string Client, TestLogSink.LogRecord Close);

    /// <summary>
    /// The client sends a whole POST and then its FIN (Shutdown(Send)). Kestrel does not serve half-closed HTTP/1.1
    /// connections: the transport reports the FIN by completing the input and firing ConnectionClosed (Sockets does
    /// both when its receive loop ends), and Kestrel aborts the request; no response goes out. Whether the close is a
    /// FIN or a RST is a race inside Kestrel (ConnectionClosed aborts with no reason: FIN; a body read that sees the
    /// completed input first aborts with "The client closed the connection.": RST), the same with either transport.
    /// </summary>
    private static async Task<HalfCloseOutcome> HalfCloseAsync(string transport, bool handlerAwaitsTheBody)
    {
        var firstRead = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handler = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await StartAsync(transport, app => app.MapPost("/upload", async (HttpContext c) =>
        {
            long received = 0;
            var buffer = new byte[8192];
            try
            {
                int n;
                while ((n = await c.Request.Body.ReadAsync(buffer)) > 0)
                {
                    received += n;
                    firstRead.TrySetResult();
                }
            }
            catch (Exception e)
            {
                handler.TrySetResult(e.GetType().Name);
                throw;
            }
            bool aborted = await Task.Delay(TimeSpan.FromSeconds(15), c.RequestAborted).ContinueWith(t => t.IsCanceled);
            handler.TrySetResult($"read {received}, RequestAborted {aborted}");
            c.Response.ContentLength = 5;
            await c.Response.WriteAsync("hello");
        }));

        using var s = RawSocket.Connect(server.Port);
        var body = new byte[100_000];
        s.Send(Encoding.ASCII.GetBytes($"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {body.Length}\r\n\r\n"));
        if (handlerAwaitsTheBody)
        {
            s.Send(body.AsSpan(0, 1000));
            await firstRead.Task.WaitAsync(TimeSpan.FromSeconds(15));
            // The handler goes straight back into ReadAsync; no event says it is parked there. If it is not yet, the
            // outcome below is still the same (the rest arrives complete before it reads).
            await Task.Delay(100);
            s.Send(body.AsSpan(1000));
        }
        else
        {
            s.Send(body);
        }
        s.Shutdown(SocketShutdown.Send);

        string handlerSaw = await handler.Task.WaitAsync(TimeSpan.FromSeconds(20));
        string clientSaw;
        try
        {
            clientSaw = $"{RawSocket.ReadToEnd(s).Length} bytes then FIN";
        }
        catch (SocketException e)
        {
            clientSaw = e.SocketErrorCode.ToString();
        }
        string category = CategoryOf(transport);
        Assert.Equal(6, (await WaitForLogAsync(server, category, "ConnectionReadFin")).EventId.Id);
        var close = await PollAsync(() => server.Logs.Records.FirstOrDefault(r => r.Category == category
            && r.EventId.Name is "ConnectionWriteFin" or "ConnectionWriteRst"), "ConnectionWriteFin or ConnectionWriteRst");
        AssertNothingAboveDebug(server, category);
        return new HalfCloseOutcome(handlerSaw, clientSaw, close);
    }

    /// <summary>The reset was logged as ConnectionReset (19) at Debug, nothing of the transport above Debug, and serving goes on.</summary>
    private static async Task AssertResetLoggedAtDebugAndStillServingAsync(IoUringTestServer server, string transport)
    {
        var reset = await WaitForLogAsync(server, CategoryOf(transport), "ConnectionReset");
        Assert.Equal(19, reset.EventId.Id);
        Assert.Equal(LogLevel.Debug, reset.Level);
        await AssertStillServesAsync(server);
        AssertNothingAboveDebug(server, CategoryOf(transport));
    }

    [Theory]
    [InlineData(IoUringRing, false)]
    [InlineData(IoUringRing, true)]
    [InlineData(Sockets, false)]
    [InlineData(Sockets, true)]
    public async Task HalfCloseAfterTheRequestGetsNoResponse(string transport, bool handlerAwaitsTheBody)
    {
        var outcome = await HalfCloseAsync(transport, handlerAwaitsTheBody);
        // The request is aborted either way: its body read fails ("Unexpected end of request content"), or it read
        // the whole body and RequestAborted fired.
        Assert.True(outcome.Handler is "BadHttpRequestException" or "read 100000, RequestAborted True", outcome.Handler);
        // Never a response: FIN with no bytes, or RST, and the transport logged the one it sent.
        Assert.True(outcome.Client is "0 bytes then FIN" or nameof(SocketError.ConnectionReset), outcome.Client);
        if (outcome.Client == "0 bytes then FIN")
        {
            Assert.Equal("ConnectionWriteFin", outcome.Close.EventId.Name);
        }
        else
        {
            Assert.Equal("ConnectionWriteRst", outcome.Close.EventId.Name);
            Assert.Contains("The client closed the connection.", outcome.Close.Message);
        }
    }

    [Theory]
    [InlineData(IoUringRing)]
    [InlineData(Sockets)]
    public async Task ClientResetBeforeAnyRequestIsAConnectionResetAtDebug(string transport)
    {
        await using var server = await StartAsync(transport, MapHello);
        using (var s = RawSocket.Connect(server.Port))
        {
            await WaitForConnectionStartAsync(server);
            RawSocket.Reset(s);
        }
        await AssertResetLoggedAtDebugAndStillServingAsync(server, transport);
    }

    [Theory]
    [InlineData(IoUringRing)]
    [InlineData(Sockets)]
    public async Task ClientResetBetweenRequestsIsAConnectionResetAtDebug(string transport)
    {
        await using var server = await StartAsync(transport, app => app.MapGet("/", (HttpContext c) =>
        {
            c.Response.ContentLength = 5;
            return c.Response.WriteAsync("hello");
        }));
        using (var s = RawSocket.Connect(server.Port))
        {
            s.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8);
            Assert.Equal("hello", RawSocket.ReadResponse(s).Body);
            RawSocket.Reset(s);
        }
        await AssertResetLoggedAtDebugAndStillServingAsync(server, transport);
    }

    [Theory]
    [InlineData(IoUringRing)]
    [InlineData(Sockets)]
    public async Task ClientResetMidRequestSurfacesAsConnectionResetAndServingGoesOn(string transport)
    {
        var handlerError = new TaskCompletionSource<Exception>(TaskCreationOptions.RunContinuationsAsynchronously);
        var bodyStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await StartAsync(transport, app =>
        {
            MapHello(app);
            app.MapPost("/slow", async (HttpContext c) =>
            {
                var buffer = new byte[1024];
                try
                {
                    Assert.True(await c.Request.Body.ReadAsync(buffer) > 0);
                    bodyStarted.TrySetResult();
                    while (await c.Request.Body.ReadAsync(buffer) > 0) { }
                    handlerError.TrySetResult(new InvalidOperationException("the body ended normally"));
                }
                catch (Exception e)
                {
                    handlerError.TrySetResult(e);
                }
            });
        });

        using (var s = RawSocket.Connect(server.Port))
        {
            s.Send("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\npartial"u8);
            await bodyStarted.Task.WaitAsync(TimeSpan.FromSeconds(15));
            RawSocket.Reset(s); // the server is waiting for the rest of the body
        }

        var error = await handlerError.Task.WaitAsync(TimeSpan.FromSeconds(15));
        Assert.True(error is IOException or ConnectionResetException or OperationCanceledException || error.InnerException is ConnectionResetException,
            $"unexpected handler error {error}");
        // RequestAborted may or may not fire here: the handler can finish (on the body's error) before Kestrel hears
        // of the closed connection; under Sockets it usually does. The failed body read is the contract.
        var reset = await WaitForLogAsync(server, CategoryOf(transport), "ConnectionReset");
        Assert.Equal(19, reset.EventId.Id);
        Assert.Equal(LogLevel.Debug, reset.Level);
        AssertNothingAboveDebug(server, CategoryOf(transport));
        await AssertStillServesAsync(server);
    }

    [Theory]
    [InlineData(IoUringRing)]
    [InlineData(Sockets)]
    public async Task ClientResetMidResponseAbortsTheRequestAndServingGoesOn(string transport)
    {
        var outcome = new TaskCompletionSource<Exception?>(TaskCreationOptions.RunContinuationsAsynchronously);
        var requestAborted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var writing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await StartAsync(transport, app =>
        {
            MapHello(app);
            app.MapGet("/endless", async (HttpContext c) =>
            {
                c.RequestAborted.Register(() => requestAborted.TrySetResult());
                var chunk = new byte[16 * 1024];
                try
                {
                    // Slow, endless: only the client's reset can end it.
                    for (var deadline = DateTime.UtcNow.AddSeconds(30); DateTime.UtcNow < deadline;)
                    {
                        await c.Response.Body.WriteAsync(chunk, c.RequestAborted);
                        writing.TrySetResult();
                        await Task.Delay(5, c.RequestAborted);
                    }
                    outcome.TrySetResult(null);
                }
                catch (Exception e)
                {
                    outcome.TrySetResult(e);
                }
            });
        });

        using (var s = RawSocket.Connect(server.Port))
        {
            s.Send("GET /endless HTTP/1.1\r\nHost: x\r\n\r\n"u8);
            Assert.True(s.Receive(new byte[4096]) > 0);
            await writing.Task.WaitAsync(TimeSpan.FromSeconds(15));
            RawSocket.Reset(s);
        }
        await requestAborted.Task.WaitAsync(TimeSpan.FromSeconds(15));
        var error = await outcome.Task.WaitAsync(TimeSpan.FromSeconds(15));
        Assert.True(error is OperationCanceledException or IOException or ConnectionResetException or ConnectionAbortedException,
            $"the handler's writes should fail once the client reset, got {error?.ToString() ?? "no error"}");
        AssertNothingAboveDebug(server, CategoryOf(transport));
        await AssertStillServesAsync(server);
    }

    [Theory]
    [InlineData(IoUringRing)]
    [InlineData(Sockets)]
    public async Task ServerAbortSendsRst(string transport)
    {
        await using var server = await StartAsync(transport, app =>
        {
            MapHello(app);
            app.MapGet("/abort", (HttpContext c) => c.Abort());
        });

        using var s = RawSocket.Connect(server.Port);
        s.Send("GET /abort HTTP/1.1\r\nHost: x\r\n\r\n"u8);
        var e = Assert.Throws<SocketException>(() => RawSocket.ReadToEnd(s));
        Assert.Equal(SocketError.ConnectionReset, e.SocketErrorCode); // RST, not FIN
        Assert.Equal(8, (await WaitForLogAsync(server, CategoryOf(transport), "ConnectionWriteRst")).EventId.Id);
        Assert.DoesNotContain(server.Logs.Records, r => r.Category == CategoryOf(transport) && r.EventId.Name == "ConnectionWriteFin");
        await AssertStillServesAsync(server);
    }

    [Fact]
    public async Task ServerAbortWithFinOnErrorSendsFin()
    {
        // Sockets has FinOnError only as an internal option or a process-wide AppContext switch; io_uring has it public.
        await using var server = await StartAsync(IoUringRing, app =>
        {
            MapHello(app);
            app.MapGet("/abort", (HttpContext c) => c.Abort());
        }, configureTransport: o => o.FinOnError = true);

        using var s = RawSocket.Connect(server.Port);
        s.Send("GET /abort HTTP/1.1\r\nHost: x\r\n\r\n"u8);
        Assert.Empty(RawSocket.ReadToEnd(s)); // FIN, no bytes, no reset
        Assert.Equal(7, (await WaitForLogAsync(server, IoUringCategory, "ConnectionWriteFin")).EventId.Id);
        Assert.DoesNotContain(server.Logs.Records, r => r.Category == IoUringCategory && r.EventId.Name == "ConnectionWriteRst");
        await AssertStillServesAsync(server);
    }

    [Theory]
    [InlineData(IoUringRing)]
    [InlineData(Sockets)]
    public async Task GracefulCloseSendsTheWholeResponseThenFin(string transport)
    {
        await using var server = await StartAsync(transport, app => app.MapGet("/", async (HttpContext c) =>
        {
            c.Response.ContentLength = 5;
            await c.Response.Body.WriteAsync("hello"u8.ToArray());
        }));
        using var s = RawSocket.Connect(server.Port);
        s.Send("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"u8);
        string response = Encoding.ASCII.GetString(RawSocket.ReadToEnd(s)); // a reset would throw
        Assert.StartsWith("HTTP/1.1 200", response);
        Assert.EndsWith("\r\n\r\nhello", response);
        var fin = await WaitForLogAsync(server, CategoryOf(transport), "ConnectionWriteFin");
        Assert.Equal(7, fin.EventId.Id);
        Assert.Contains("send loop completed gracefully", fin.Message);
        Assert.DoesNotContain(server.Logs.Records, r => r.Category == CategoryOf(transport) && r.EventId.Name == "ConnectionWriteRst");
    }

    [Theory]
    [InlineData(IoUringRing)]
    [InlineData(Sockets)]
    public async Task PeerFinCompletesInputAndFiresConnectionClosedOnThePool(string transport)
    {
        var closedFired = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await StartAsync(transport, MapHello, options =>
            options.Listen(IPAddress.Loopback, 0, listen => listen.Use(next => async connection =>
            {
                connection.ConnectionClosed.Register(() => closedFired.TrySetResult(Thread.CurrentThread.IsThreadPoolThread));
                await next(connection);
            })));

        using (var s = RawSocket.Connect(server.Port))
        {
            s.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8);
            var response = new StringBuilder();
            var buffer = new byte[1024];
            while (!response.ToString().EndsWith("0\r\n\r\n", StringComparison.Ordinal)) // the chunked body ends
            {
                int n = s.Receive(buffer);
                Assert.True(n > 0);
                response.Append(Encoding.ASCII.GetString(buffer, 0, n));
            }
            Assert.False(closedFired.Task.IsCompleted); // keep-alive: still open
            s.Shutdown(SocketShutdown.Send); // FIN
            Assert.True(await closedFired.Task.WaitAsync(TimeSpan.FromSeconds(15)), "ConnectionClosed must fire on the thread pool");
            Assert.Equal(0, s.Receive(new byte[16])); // and the server answers with its own FIN
        }
        Assert.Equal(6, (await WaitForLogAsync(server, CategoryOf(transport), "ConnectionReadFin")).EventId.Id);
        AssertNothingAboveDebug(server, CategoryOf(transport));
    }

    [Theory]
    [InlineData(IoUringRing)]
    [InlineData(Sockets)]
    public async Task GarbageBytesGetABadRequestAndServingGoesOn(string transport)
    {
        await using var server = await StartAsync(transport, MapHello);
        using (var s = RawSocket.Connect(server.Port))
        {
            var garbage = new byte[4096];
            new Random(7).NextBytes(garbage);
            garbage[0] = (byte)'Z';
            s.Send(garbage);
            var response = new StringBuilder();
            var buffer = new byte[4096];
            try
            {
                int n;
                while ((n = s.Receive(buffer)) > 0) response.Append(Encoding.ASCII.GetString(buffer, 0, n));
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
            {
                // Closing with unread garbage in the server's receive queue makes its kernel send RST after the 400.
            }
            Assert.StartsWith("HTTP/1.1 400", response.ToString());
        }
        await AssertStillServesAsync(server);
        AssertNothingAboveDebug(server, CategoryOf(transport));
    }
}
