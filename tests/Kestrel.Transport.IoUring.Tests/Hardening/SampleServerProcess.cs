using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;

namespace Kestrel.Transport.IoUring.Tests.Hardening;

/// <summary>
/// The sample app in a child process on a free loopback port, its console output collected, so that tests can change
/// its resource limits (a limit lowered in the test process would hit the test runner too) and see it die.
/// </summary>
internal sealed partial class SampleServerProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _log = new();
    private readonly List<(string Text, TaskCompletionSource Seen)> _waits = new();

    private SampleServerProcess(Process process, int port)
    {
        _process = process;
        Port = port;
    }

    public int Port { get; }

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

    public string Log
    {
        get
        {
            lock (_log) return _log.ToString();
        }
    }

    /// <summary>Starts the sample; <paramref name="shellPrefix"/> runs before it in the same shell (e.g. "ulimit -n 400 &amp;&amp; ").</summary>
    public static async Task<SampleServerProcess> StartAsync(IDictionary<string, string> environment, string shellPrefix = "")
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
        psi.ArgumentList.Add($"{shellPrefix}exec dotnet '{sample}' --urls http://127.0.0.1:{port}");
        foreach (var (key, value) in environment)
        {
            psi.Environment[key] = value;
        }
        var server = new SampleServerProcess(Process.Start(psi)!, port);
        var started = server.WaitForOutput("io_uring transport started");
        server._process.OutputDataReceived += (_, e) => server.OnLine(e.Data);
        server._process.ErrorDataReceived += (_, e) => server.OnLine(e.Data);
        server._process.BeginOutputReadLine();
        server._process.BeginErrorReadLine();
        try
        {
            await started.WaitAsync(TimeSpan.FromSeconds(60));
            await server.WaitUntilServingAsync();
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
        return server;
    }

    /// <summary>Completes when a line of output contains <paramref name="text"/> (also if one already did).</summary>
    public Task WaitForOutput(string text)
    {
        var seen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_log)
        {
            if (_log.ToString().Contains(text, StringComparison.Ordinal))
            {
                seen.SetResult();
            }
            else
            {
                _waits.Add((text, seen));
            }
        }
        return seen.Task;
    }

    private void OnLine(string? line)
    {
        if (line is null)
        {
            return;
        }
        lock (_log)
        {
            _log.AppendLine(line);
            foreach (var (text, seen) in _waits)
            {
                if (line.Contains(text, StringComparison.Ordinal))
                {
                    seen.TrySetResult();
                }
            }
        }
    }

    /// <summary>CPU seconds (user + system) the process has used so far.</summary>
    public double CpuSeconds()
    {
        string stat = File.ReadAllText($"/proc/{Pid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' '); // fields from the 3rd on (state) after "pid (comm) "
        return (long.Parse(fields[11]) + long.Parse(fields[12])) / 100.0; // utime, stime in USER_HZ (100)
    }

    /// <summary>Sets the process's RLIMIT_NOFILE (soft and hard) while it runs, as `prlimit --pid … --nofile=n:n` does.</summary>
    public unsafe void LowerDescriptorLimit(ulong limit)
    {
        var value = new Abi.LinuxSyscalls.RLimit { Current = limit, Maximum = limit };
        Assert.True(PrLimit(Pid, Abi.LinuxSyscalls.RLimitNoFile, &value, null) == 0, $"prlimit failed: errno {Marshal.GetLastPInvokeError()}");
    }

    [LibraryImport("libc", EntryPoint = "prlimit", SetLastError = true)]
    private static unsafe partial int PrLimit(int pid, int resource, Abi.LinuxSyscalls.RLimit* newLimit, Abi.LinuxSyscalls.RLimit* oldLimit);

    /// <summary>One GET / on <paramref name="s"/>; true when it answered 200.</summary>
    public static async Task<bool> RequestAsync(Socket s)
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

    /// <summary>A new connection and one GET /; true when it answered 200.</summary>
    public async Task<bool> FreshRequestAsync()
    {
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await s.ConnectAsync(IPAddress.Loopback, Port).WaitAsync(TimeSpan.FromSeconds(20));
        }
        catch (Exception e) when (e is SocketException or TimeoutException)
        {
            return false;
        }
        return await RequestAsync(s);
    }

    private async Task WaitUntilServingAsync()
    {
        // The transport logs its start line when it binds; Kestrel may still be binding. Poll for the port (no
        // event crosses the process boundary), bounded.
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await s.ConnectAsync(IPAddress.Loopback, Port);
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

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
    }
}
