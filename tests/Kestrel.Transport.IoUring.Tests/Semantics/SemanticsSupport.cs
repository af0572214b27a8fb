using System.Net;
using System.Net.Sockets;
using System.Text;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Tests.Semantics;

/// <summary>
/// Tests that change something process- or machine-wide (an environment variable, a sysctl): they run alone, never
/// alongside any other test of the assembly.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class MachineWideCollection
{
    public const string Name = "Semantics (machine-wide switches, serial)";
}

/// <summary>
/// The lifecycle tests run the same scenario over io_uring and over Kestrel's own Sockets transport (reached through
/// <c>Enabled = false</c>, so the same host, logging and endpoints): the Sockets run is the reference the io_uring
/// run must match, and shows the test itself asserts what Sockets really does.
/// </summary>
public static class TransportUnderTest
{
    public const string IoUringRing = "io_uring";
    public const string Sockets = "sockets";

    public const string IoUringCategory = "Kestrel.Transport.IoUring";
    /// <summary>Start-up, fall-back and ring set-up lines: a category of their own.</summary>
    public const string IoUringLifetimeCategory = "Kestrel.Transport.IoUring.Lifetime";
    public const string SocketsCategory = "Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets";

    public static string CategoryOf(string transport) => transport == IoUringRing ? IoUringCategory : SocketsCategory;

    public static async Task<IoUringTestServer> StartAsync(
        string transport,
        Action<WebApplication>? configureApp = null,
        Action<KestrelServerOptions>? configureKestrel = null,
        Action<IoUringTransportOptions>? configureTransport = null,
        Action<IServiceCollection>? configureServices = null)
    {
        var server = await IoUringTestServer.StartAsync(configureApp, configureKestrel, o =>
        {
            configureTransport?.Invoke(o);
            if (transport == Sockets)
            {
                o.Enabled = false;
            }
        }, configureServices, requireIoUring: transport == IoUringRing);
        if (transport == Sockets && server.Factory.IsUsingIoUring)
        {
            await server.DisposeAsync();
            throw new InvalidOperationException("the Sockets reference run is served by io_uring");
        }
        return server;
    }

    /// <summary>The first record of <paramref name="category"/> named <paramref name="eventName"/>, waited for.</summary>
    public static Task<TestLogSink.LogRecord> WaitForLogAsync(IoUringTestServer server, string category, string eventName)
        => PollAsync(() => server.Logs.Records.FirstOrDefault(r => r.Category == category && r.EventId.Name == eventName),
            $"{category}/{eventName}");

    // Log records have no event to await across the logger boundary: poll with a deadline.
    public static async Task<T> PollAsync<T>(Func<T?> probe, string what) where T : class
    {
        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (true)
        {
            if (probe() is { } value) return value;
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"{what} never came");
            await Task.Delay(20);
        }
    }

    /// <summary>No record of the transport's connection category above Debug, as with Sockets' category.</summary>
    public static void AssertNothingAboveDebug(IoUringTestServer server, string category)
    {
        var loud = server.Logs.Records
            .Where(r => r.Category == category && r.Level > LogLevel.Debug)
            .Select(r => $"{r.Level} {r.EventId}: {r.Message} {r.Exception}")
            .ToList();
        Assert.True(loud.Count == 0, "logged above Debug: " + string.Join(" | ", loud));
    }
}

/// <summary>Blocking raw-socket helpers with a receive timeout, so a missing FIN or RST fails instead of hanging.</summary>
public static class RawSocket
{
    public static Socket Connect(int port, IPAddress? address = null)
    {
        address ??= IPAddress.Loopback;
        var s = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true, ReceiveTimeout = 15_000 };
        s.Connect(address, port);
        return s;
    }

    /// <summary>Closes with linger 0: the kernel sends RST.</summary>
    public static void Reset(Socket s)
    {
        s.LingerState = new LingerOption(true, 0);
        s.Close();
    }

    /// <summary>Reads until the peer's FIN (0 bytes); a reset or timeout throws.</summary>
    public static byte[] ReadToEnd(Socket s)
    {
        var all = new MemoryStream();
        var buffer = new byte[64 * 1024];
        int n;
        while ((n = s.Receive(buffer)) > 0)
        {
            all.Write(buffer, 0, n);
        }
        return all.ToArray();
    }

    /// <summary>Sends a GET on <paramref name="s"/> and returns the body of its response, which must be a 200.</summary>
    public static string Get(Socket s, string path)
    {
        s.Send(Encoding.ASCII.GetBytes($"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"));
        var (head, body) = ReadResponse(s);
        Assert.True(head.StartsWith("HTTP/1.1 200", StringComparison.Ordinal), $"GET {path}: {head.Split("\r\n")[0]}");
        return body;
    }

    /// <summary>The server side: a response with a Content-Length, which <see cref="ReadResponse"/> reads.</summary>
    public static Task AnswerAsync(HttpContext context, string text)
    {
        context.Response.ContentLength = text.Length;
        return context.Response.WriteAsync(text);
    }

    /// <summary>Reads one HTTP/1.1 response with a Content-Length body (headers and body as text).</summary>
    public static (string Head, string Body) ReadResponse(Socket s)
    {
        var data = new List<byte>();
        var buffer = new byte[16 * 1024];
        int headEnd = -1;
        int contentLength = -1;
        while (true)
        {
            if (headEnd < 0)
            {
                string text = Encoding.ASCII.GetString(data.ToArray());
                headEnd = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
                if (headEnd >= 0)
                {
                    var lines = text[..headEnd].Split("\r\n");
                    var line = lines.FirstOrDefault(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase))
                        ?? throw new IOException($"a response without Content-Length: {lines[0]}");
                    contentLength = int.Parse(line["Content-Length:".Length..].Trim());
                }
            }
            if (headEnd >= 0 && data.Count >= headEnd + 4 + contentLength)
            {
                var bytes = data.ToArray();
                return (Encoding.ASCII.GetString(bytes, 0, headEnd), Encoding.ASCII.GetString(bytes, headEnd + 4, contentLength));
            }
            int n = s.Receive(buffer);
            if (n == 0) throw new IOException("the server closed before the whole response came");
            data.AddRange(buffer.AsSpan(0, n).ToArray());
        }
    }
}
