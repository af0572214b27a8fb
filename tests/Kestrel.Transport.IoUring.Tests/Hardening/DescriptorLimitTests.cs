using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Hardening;

/// <summary>
/// RLIMIT_NOFILE reached: the sample app runs in a child process with `ulimit -n 400` and a flood of 700
/// connections. Accepting must pause (not spin, not take the runtime's last descriptors), established connections
/// keep working, and accepting resumes once connections close. Kestrel over Sockets has been seen to die with
/// "Out of memory." in this scenario.
/// </summary>
[Collection(Protocols.HeavyProtocolCollection.Name)]
public sealed class DescriptorLimitTests(ITestOutputHelper output)
{
    [Fact]
    public async Task FloodBeyondRlimitNofilePausesAcceptingAndRecovers()
    {
        string sample = Path.Combine(AppContext.BaseDirectory, "IoUringSample.dll");
        Assert.True(File.Exists(sample), $"the sample app is not next to the tests: {sample}");
        int port = FreePort();

        var psi = new ProcessStartInfo("/bin/bash")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = AppContext.BaseDirectory,
        };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add($"ulimit -n 400 && exec dotnet '{sample}' --urls http://127.0.0.1:{port}");
        psi.Environment["Logging__LogLevel__Default"] = "Warning";
        psi.Environment["Logging__LogLevel__Kestrel.Transport.IoUring"] = "Information";
        using var process = Process.Start(psi)!;
        var log = new StringBuilder();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        process.OutputDataReceived += (_, e) => { if (e.Data is null) return; lock (log) log.AppendLine(e.Data); if (e.Data.Contains("io_uring transport started")) started.TrySetResult(); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is null) return; lock (log) log.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        var sockets = new List<Socket>();
        try
        {
            await started.Task.WaitAsync(TimeSpan.FromSeconds(60));
            await WaitUntilServingAsync(port);

            // 700 connection attempts; the kernel completes handshakes into the backlog, the transport accepts only
            // what its share of 400 descriptors allows.
            for (int i = 0; i < 700; i++)
            {
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { Blocking = false };
                try { s.Connect(IPAddress.Loopback, port); } catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress) { }
                sockets.Add(s);
            }

            // The first 40 were accepted: they are served while the flood waits.
            int served = 0;
            foreach (var s in sockets.Take(40))
            {
                if (await RequestAsync(s)) served++;
            }
            Assert.Equal(40, served);
            Assert.False(process.HasExited, "the server died under the flood:\n" + log);

            // Drop the flood; accepting resumes and a brand-new client is served.
            foreach (var s in sockets.Skip(40)) s.Dispose();
            using var fresh = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await fresh.ConnectAsync(IPAddress.Loopback, port).WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(await RequestAsync(fresh), "a new client was not served after the flood:\n" + log);

            string text;
            lock (log) text = log.ToString();
            output.WriteLine(text);
            Assert.Contains("paused", text);                    // the transport said so, once per pause
            Assert.DoesNotContain("Out of memory", text);
            Assert.DoesNotContain("crit:", text);
            Assert.False(process.HasExited);
        }
        finally
        {
            foreach (var s in sockets) s.Dispose();
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync();
            }
        }
    }

    private static async Task<bool> RequestAsync(Socket s)
    {
        s.Blocking = true;
        s.ReceiveTimeout = 20_000;
        try
        {
            await s.SendAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray(), SocketFlags.None);
            var buffer = new byte[4096];
            int n = await s.ReceiveAsync(buffer, SocketFlags.None).WaitAsync(TimeSpan.FromSeconds(20));
            return Encoding.ASCII.GetString(buffer, 0, n).StartsWith("HTTP/1.1 200", StringComparison.Ordinal);
        }
        catch (Exception e) when (e is SocketException or TimeoutException)
        {
            return false;
        }
    }

    private static async Task WaitUntilServingAsync(int port)
    {
        // The transport logs its start line when it binds; Kestrel may still be binding. Poll for the port (no
        // event crosses the process boundary), bounded.
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await s.ConnectAsync(IPAddress.Loopback, port);
                Assert.True(await RequestAsync(s));
                return;
            }
            catch (SocketException) when (DateTime.UtcNow < deadline)
            {
                await Task.Delay(100);
            }
        }
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}
