using System.Net;
using System.Net.Sockets;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Hardening;

/// <summary>
/// RLIMIT_NOFILE reached: the sample app runs in a child process whose limit is 400, and 700 connections flood in.
/// Accepting must pause (not spin, not take the runtime's last descriptors), established connections keep working,
/// and accepting resumes once connections close. Kestrel over Sockets has been seen to die with "Out of memory." in
/// this scenario.
/// </summary>
[Collection(Protocols.HeavyProtocolCollection.Name)]
public sealed class DescriptorLimitTests(ITestOutputHelper output)
{
    [Fact]
    public async Task FloodBeyondRlimitNofilePausesAcceptingAndRecovers()
    {
        await using var server = await SampleServerProcess.StartAsync(new Dictionary<string, string>
        {
            ["Logging__LogLevel__Default"] = "Warning",
            ["Logging__LogLevel__Kestrel.Transport.IoUring"] = "Information",
        }, shellPrefix: "ulimit -n 400 && ");

        var sockets = Flood(server.Port, 700);
        try
        {
            // The first 40 were accepted: they are served while the flood waits.
            int served = 0;
            foreach (var s in sockets.Take(40))
            {
                if (await SampleServerProcess.RequestAsync(s)) served++;
            }
            Assert.Equal(40, served);
            Assert.False(server.HasExited, "the server died under the flood:\n" + server.Log);

            // Drop the flood; accepting resumes and a brand-new client is served.
            foreach (var s in sockets.Skip(40)) s.Dispose();
            Assert.True(await server.FreshRequestAsync(), "a new client was not served after the flood:\n" + server.Log);

            string text = server.Log;
            output.WriteLine(text);
            Assert.Contains("paused", text);                    // the transport said so, once per pause
            Assert.DoesNotContain("Out of memory", text);
            Assert.DoesNotContain("crit:", text);
            Assert.False(server.HasExited);
        }
        finally
        {
            foreach (var s in sockets) s.Dispose();
        }
    }

    /// <summary>
    /// An operator lowers a running server's limit to 400 (prlimit) and 700 connections flood in, with console
    /// logging on; three times, each on a fresh server. The server must survive, use less than 0.1 of a core while
    /// accepting is paused, and then serve 200 of 200 requests.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task FloodAfterTheLimitWasLoweredOnARunningServerIsSurvived(int round)
    {
        await using var server = await SampleServerProcess.StartAsync(new Dictionary<string, string>
        {
            ["Logging__LogLevel__Default"] = "Information",
            ["Logging__LogLevel__Microsoft.AspNetCore"] = "Information",
        });
        var paused = server.WaitForOutput("paused");
        var noticed = server.WaitForOutput("one connection at a time");
        server.LowerDescriptorLimit(400);
        // The transport notices by itself (within a second), without a connection arriving.
        Assert.True(await Task.WhenAny(noticed, Task.Delay(TimeSpan.FromSeconds(10))) == noticed, "the lowered limit went unnoticed:\n" + server.Log);

        var sockets = Flood(server.Port, 700);
        try
        {
            Assert.True(await Task.WhenAny(paused, Task.Delay(TimeSpan.FromSeconds(30))) == paused, "accepting never paused:\n" + server.Log);
            Assert.False(server.HasExited, "the server died under the flood:\n" + server.Log);

            // A measurement window while accepting is paused and the flood waits in the backlog, once the accepted
            // connections have been set up (their first JIT work done).
            await Task.Delay(TimeSpan.FromSeconds(1));
            double before = server.CpuSeconds();
            await Task.Delay(TimeSpan.FromSeconds(2));
            double cores = (server.CpuSeconds() - before) / 2;
            output.WriteLine($"round {round}: {cores:F3} cores while paused");
            Assert.False(server.HasExited, "the server died under the flood:\n" + server.Log);
            Assert.True(cores < 0.1, $"the server used {cores:F3} cores while accepting was paused");

            foreach (var s in sockets) s.Dispose();
            int served = 0;
            for (int batch = 0; batch < 20; batch++)
            {
                var results = await Task.WhenAll(Enumerable.Range(0, 10).Select(_ => server.FreshRequestAsync()));
                served += results.Count(ok => ok);
            }
            string log = server.Log;
            Assert.True(served == 200, $"{served} of 200 requests served after the flood:\n{log}");
            Assert.DoesNotContain("Out of memory", log);
            Assert.False(server.HasExited, "the server died:\n" + log);
        }
        finally
        {
            foreach (var s in sockets) s.Dispose();
        }
    }

    /// <summary><paramref name="count"/> connection attempts at once; the kernel completes handshakes into the backlog.</summary>
    private static List<Socket> Flood(int port, int count)
    {
        var sockets = new List<Socket>();
        for (int i = 0; i < count; i++)
        {
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { Blocking = false };
            try { s.Connect(IPAddress.Loopback, port); } catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress) { }
            sockets.Add(s);
        }
        return sockets;
    }
}
