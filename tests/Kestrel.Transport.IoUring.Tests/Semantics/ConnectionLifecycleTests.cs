using System.Net;
using System.Net.Sockets;
using System.Text;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Protocols;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Tests.Semantics;

/// <summary>
/// FIN, RST, resets and aborts, observed from raw client sockets and from the transport's log events (which reuse
/// the Sockets transport's ids and names), as the Sockets transport behaves.
/// </summary>
public sealed class ConnectionLifecycleTests
{
    private const string Category = "Kestrel.Transport.IoUring";

    private static Task<TestLogSink.LogRecord> WaitForLogAsync(IoUringTestServer server, string eventName)
        => PollAsync(() => server.Logs.Records.FirstOrDefault(r => r.Category == Category && r.EventId.Name == eventName));

    // Log records have no event to await across the logger boundary; poll with a deadline.
    private static async Task<T> PollAsync<T>(Func<T?> probe) where T : class
    {
        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (true)
        {
            if (probe() is { } value) return value;
            if (DateTime.UtcNow > deadline) throw new TimeoutException("the expected log event never came");
            await Task.Delay(20);
        }
    }

    private static Socket Connect(int port)
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true, ReceiveTimeout = 15_000 };
        s.Connect(IPAddress.Loopback, port);
        return s;
    }

    private static void Reset(Socket s)
    {
        s.LingerState = new LingerOption(true, 0);
        s.Close();
    }

    private static void AssertNothingAboveDebug(IoUringTestServer server)
        => Assert.DoesNotContain(server.Logs.Records, r => r.Category == Category && r.Level > LogLevel.Debug && r.EventId.Id < 100);

    [Fact]
    public async Task ClientResetMidRequestSurfacesAsConnectionResetAndServingGoesOn()
    {
        var handlerError = new TaskCompletionSource<Exception>(TaskCreationOptions.RunContinuationsAsynchronously);
        var bodyStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await IoUringTestServer.StartAsync(app =>
        {
            app.MapGet("/", () => "hello");
            app.MapPost("/slow", async (HttpContext c) =>
            {
                var buffer = new byte[1024];
                try
                {
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

        using (var s = Connect(server.Port))
        {
            s.Send("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\npartial"u8);
            await bodyStarted.Task.WaitAsync(TimeSpan.FromSeconds(15));
            Reset(s);
        }

        var error = await handlerError.Task.WaitAsync(TimeSpan.FromSeconds(15));
        Assert.True(error is IOException or ConnectionResetException or OperationCanceledException || error.InnerException is ConnectionResetException,
            $"unexpected handler error {error}");
        var reset = await WaitForLogAsync(server, "ConnectionReset");
        Assert.Equal(19, reset.EventId.Id);
        Assert.Equal(LogLevel.Debug, reset.Level);
        AssertNothingAboveDebug(server);

        using var client = server.CreateClient();
        Assert.Equal("hello", await client.GetStringAsync("/"));
    }

    [Fact]
    public async Task ClientResetMidResponseAbortsTheRequestAndServingGoesOn()
    {
        var aborted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var writing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await IoUringTestServer.StartAsync(app =>
        {
            app.MapGet("/", () => "hello");
            app.MapGet("/endless", async (HttpContext c) =>
            {
                c.RequestAborted.Register(() => aborted.TrySetResult());
                var chunk = new byte[16 * 1024];
                try
                {
                    while (!c.RequestAborted.IsCancellationRequested)
                    {
                        await c.Response.Body.WriteAsync(chunk, c.RequestAborted);
                        writing.TrySetResult();
                    }
                }
                catch (Exception) when (c.RequestAborted.IsCancellationRequested || true)
                {
                    aborted.TrySetResult();
                }
            });
        });

        using (var s = Connect(server.Port))
        {
            s.ReceiveBufferSize = 4096;
            s.Send("GET /endless HTTP/1.1\r\nHost: x\r\n\r\n"u8);
            s.Receive(new byte[4096]);
            await writing.Task.WaitAsync(TimeSpan.FromSeconds(15));
            Reset(s);
        }
        await aborted.Task.WaitAsync(TimeSpan.FromSeconds(15));
        AssertNothingAboveDebug(server);
        using var client = server.CreateClient();
        Assert.Equal("hello", await client.GetStringAsync("/"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ServerAbortSendsRstOrFinWithFinOnError(bool finOnError)
    {
        await using var server = await IoUringTestServer.StartAsync(app =>
        {
            app.MapGet("/", () => "hello");
            app.MapGet("/abort", (HttpContext c) => c.Abort());
        }, configureTransport: o => o.FinOnError = finOnError);

        using var s = Connect(server.Port);
        s.Send("GET /abort HTTP/1.1\r\nHost: x\r\n\r\n"u8);
        var buffer = new byte[1024];
        if (finOnError)
        {
            Assert.Equal(0, s.Receive(buffer)); // FIN
            Assert.Equal(7, (await WaitForLogAsync(server, "ConnectionWriteFin")).EventId.Id);
        }
        else
        {
            var e = Assert.Throws<SocketException>(() => { while (s.Receive(buffer) > 0) { } });
            Assert.Equal(SocketError.ConnectionReset, e.SocketErrorCode); // RST
            Assert.Equal(8, (await WaitForLogAsync(server, "ConnectionWriteRst")).EventId.Id);
        }
        using var client = server.CreateClient();
        Assert.Equal("hello", await client.GetStringAsync("/"));
    }

    [Fact]
    public async Task GracefulCloseSendsTheWholeResponseThenFin()
    {
        await using var server = await IoUringTestServer.StartAsync(app => app.MapGet("/", async (HttpContext c) =>
        {
            c.Response.ContentLength = 5;
            await c.Response.Body.WriteAsync("hello"u8.ToArray());
        }));
        await using var raw = await RawHttpConnection.ConnectAsync(server.Port);
        await raw.SendAsync("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        var (status, _, body) = await raw.ReadResponseAsync();
        Assert.Equal(200, status);
        Assert.Equal("hello", body);
        Assert.True(await raw.ReadsEndOfStreamAsync());
        var fin = await WaitForLogAsync(server, "ConnectionWriteFin");
        Assert.Contains("send loop completed gracefully", fin.Message);
    }

    [Fact]
    public async Task PeerFinCompletesInputAndFiresConnectionClosedOnThePool()
    {
        var closedFired = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await IoUringTestServer.StartAsync(configureKestrel: options =>
            options.Listen(IPAddress.Loopback, 0, listen => listen.Use(next => async connection =>
            {
                connection.ConnectionClosed.Register(() => closedFired.TrySetResult(Thread.CurrentThread.IsThreadPoolThread));
                await next(connection);
            })));

        using (var s = Connect(server.Port))
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
            s.Shutdown(SocketShutdown.Send); // FIN
            Assert.True(await closedFired.Task.WaitAsync(TimeSpan.FromSeconds(15)), "ConnectionClosed must fire on the thread pool");
            Assert.Equal(0, s.Receive(new byte[16]));
        }
        Assert.Equal(6, (await WaitForLogAsync(server, "ConnectionReadFin")).EventId.Id);
    }

    [Fact]
    public async Task GarbageBytesGetABadRequestAndServingGoesOn()
    {
        await using var server = await IoUringTestServer.StartAsync();
        using (var s = Connect(server.Port))
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
                // Kestrel may reset after its 400 when unread garbage remains.
            }
            Assert.StartsWith("HTTP/1.1 400", response.ToString());
        }
        using var client = server.CreateClient();
        Assert.Equal("hello", await client.GetStringAsync("/"));
    }
}
