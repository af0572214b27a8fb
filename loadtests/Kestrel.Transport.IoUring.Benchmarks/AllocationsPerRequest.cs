using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Kestrel.Transport.IoUring.Transport;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Benchmarks;

/// <summary>
/// Allocated bytes per request in steady state, in-process: a Benchmarks-style /plaintext app (one terminal middleware
/// writing a cached body) is served over io_uring (thread-pool and inline scheduling) and over Sockets for comparison;
/// after a warm-up, C keep-alive connections from raw sockets each send N/C requests, and
/// GC.GetTotalAllocatedBytes(precise: true) is read around the window. The client runs on one thread with synchronous
/// socket calls and a reused buffer, and its own allocations (GC.GetAllocatedBytesForCurrentThread) are subtracted,
/// so what remains is the server: transport + Kestrel's HTTP/1.1 stack + the handler (which allocates nothing).
/// Kestrel over Sockets is the reference for the HTTP stack's share.
/// </summary>
internal static class AllocationsPerRequest
{
    private static readonly byte[] s_body = "Hello, World!"u8.ToArray();

    public static async Task<int> RunAsync(string[] args)
    {
        int requests = 200_000, connections = 16;
        for (int i = 0; i < args.Length - 1; i++)
        {
            if (args[i] == "--requests") requests = int.Parse(args[++i]);
            else if (args[i] == "--connections") connections = int.Parse(args[++i]);
        }

        Console.WriteLine($"Allocations per request: /plaintext, {connections} keep-alive connections, {requests:N0} measured requests after {requests / 4:N0} warm-up requests");
        Console.WriteLine($"{"configuration",-28} {"bytes/request",14} {"bytes total",14} {"gen0 GCs",9} {"req/s (in-process)",19}");
        int failures = 0;
        foreach ((string name, Action<WebApplicationBuilder> configure) in new (string, Action<WebApplicationBuilder>)[]
        {
            ("io_uring, thread pool", b => b.WebHost.UseIoUring(o => o.ApplicationScheduling = ApplicationSchedulingMode.ThreadPool)),
            ("io_uring, inline", b => b.WebHost.UseIoUring(o => o.ApplicationScheduling = ApplicationSchedulingMode.Inline)),
            ("Sockets (reference)", b => { }),
        })
        {
            try
            {
                await MeasureAsync(name, configure, requests, connections);
            }
            catch (Exception e)
            {
                Console.WriteLine($"{name,-28} FAILED: {e.GetType().Name}: {e.Message}");
                failures++;
            }
        }
        return failures == 0 ? 0 : 1;
    }

    private static async Task MeasureAsync(string name, Action<WebApplicationBuilder> configure, int requests, int connections)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        configure(builder);
        await using var app = builder.Build();
        app.Run(static context =>
        {
            context.Response.StatusCode = 200;
            context.Response.ContentType = "text/plain";
            context.Response.ContentLength = s_body.Length;
            context.Response.BodyWriter.Write(s_body);
            return Task.CompletedTask;
        });
        await app.StartAsync();
        var address = app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>()
            .Features.Get<Microsoft.AspNetCore.Hosting.Server.Features.IServerAddressesFeature>()!.Addresses.First();
        int port = new Uri(address).Port;
        var factory = app.Services.GetService<IoUringTransportFactory>();
        if (factory is not null && !factory.IsUsingIoUring)
        {
            throw new InvalidOperationException($"io_uring fell back to Sockets: {factory.FallbackReason}");
        }

        long bytes = 0, clientBytes = 0;
        int gen0 = 0;
        double seconds = 0;
        var thread = new Thread(() =>
        {
            var client = new Client(port, connections);
            client.Run(requests / 4); // warm-up: tiering, pools, buffer rings
            GC.Collect();
            GC.WaitForPendingFinalizers();
            int gen0Before = GC.CollectionCount(0);
            long clientBefore = GC.GetAllocatedBytesForCurrentThread();
            long before = GC.GetTotalAllocatedBytes(precise: true);
            var watch = System.Diagnostics.Stopwatch.StartNew();
            client.Run(requests);
            seconds = watch.Elapsed.TotalSeconds;
            long after = GC.GetTotalAllocatedBytes(precise: true);
            clientBytes = GC.GetAllocatedBytesForCurrentThread() - clientBefore;
            bytes = after - before - clientBytes;
            gen0 = GC.CollectionCount(0) - gen0Before;
            client.Dispose();
        });
        thread.Start();
        thread.Join();
        await app.StopAsync();
        Console.WriteLine($"{name,-28} {(double)bytes / requests,14:N2} {bytes,14:N0} {gen0,9} {requests / seconds,19:N0}" +
            (clientBytes > 0 ? $"   (client thread allocated {clientBytes:N0} B, subtracted)" : ""));
    }

    /// <summary>Keep-alive HTTP/1.1 client over raw sockets: sends one request on every connection, then reads every response.</summary>
    private sealed class Client : IDisposable
    {
        private readonly Socket[] _sockets;
        private readonly byte[] _request;
        private readonly byte[] _buffer = new byte[64 * 1024];
        private readonly int _responseLength;

        public Client(int port, int connections)
        {
            _request = Encoding.ASCII.GetBytes($"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
            _sockets = new Socket[connections];
            for (int i = 0; i < connections; i++)
            {
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                s.Connect(IPAddress.Loopback, port);
                _sockets[i] = s;
            }
            // Learn the response length (headers are fixed-size: Date is always 29 characters).
            _sockets[0].Send(_request);
            int got = 0;
            while (true)
            {
                got += _sockets[0].Receive(_buffer, got, _buffer.Length - got, SocketFlags.None);
                int headerEnd = _buffer.AsSpan(0, got).IndexOf("\r\n\r\n"u8);
                if (headerEnd >= 0 && got >= headerEnd + 4 + s_body.Length)
                {
                    _responseLength = headerEnd + 4 + s_body.Length;
                    if (!_buffer.AsSpan(0, got).StartsWith("HTTP/1.1 200"u8)) throw new InvalidOperationException("unexpected response");
                    break;
                }
            }
        }

        public void Run(int requests)
        {
            int rounds = requests / _sockets.Length;
            for (int r = 0; r < rounds; r++)
            {
                foreach (Socket s in _sockets)
                {
                    s.Send(_request, SocketFlags.None);
                }
                foreach (Socket s in _sockets)
                {
                    int got = 0;
                    while (got < _responseLength)
                    {
                        int n = s.Receive(_buffer, got, _responseLength - got, SocketFlags.None);
                        if (n == 0) throw new InvalidOperationException("the server closed a connection");
                        got += n;
                    }
                }
            }
        }

        public void Dispose()
        {
            foreach (Socket s in _sockets) s.Dispose();
        }
    }
}
