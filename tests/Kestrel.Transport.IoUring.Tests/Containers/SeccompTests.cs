using System.Diagnostics;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Containers;

/// <summary>
/// The sample app under a real seccomp filter on the io_uring system calls (deploy/seccomp/seccomp-exec.py installs it
/// with libseccomp, then execs the app), as under Docker's default profile (EPERM) or a hardened one (kill).
/// </summary>
[Collection(Protocols.HeavyProtocolCollection.Name)]
public sealed class SeccompTests(ITestOutputHelper output)
{
    private static readonly string Launcher = RepositoryPaths.Combine("deploy", "seccomp", "seccomp-exec.py");
    private static readonly string Sample = Path.Combine(AppContext.BaseDirectory, "IoUringSample.dll");

    private static ChildProcess StartSampleUnderFilter(string mode, Dictionary<string, string>? environment = null)
        => ChildProcess.Start(DebianPython.Path, [Launcher, mode, "dotnet", Sample, "--urls", "http://127.0.0.1:0"], environment);

    [SeccompFact]
    public async Task WhenIoUringSetupFailsWithEpermTheAppWarnsOnceAndServesOverSockets()
    {
        using var app = StartSampleUnderFilter("eperm");
        Uri address = await app.ListeningAsync(TimeSpan.FromSeconds(60));
        using var client = new HttpClient { BaseAddress = address };
        Assert.Contains("served by the Sockets transport", await client.GetStringAsync("/"));
        Assert.Equal("Degraded", await client.GetStringAsync("/healthz"));
        output.WriteLine(app.Output);

        // One warning of the transport (the health check service warns of its own each time /healthz is Degraded).
        string[] lines = app.Output.Split('\n');
        string[] warnings = lines.Where(l => l.StartsWith("warn: Kestrel.Transport.IoUring", StringComparison.Ordinal)).ToArray();
        Assert.Equal("warn: Kestrel.Transport.IoUring.Lifetime[101]", Assert.Single(warnings).TrimEnd());
        string line = lines[Array.FindIndex(lines, l => l.StartsWith("warn: Kestrel.Transport.IoUring", StringComparison.Ordinal)) + 1];
        Assert.Contains("EPERM", line);
        Assert.Contains("serving with the Sockets transport instead", line);
    }

    [SeccompFact]
    public async Task WhenIoUringSetupKillsTheProcessTheOffSwitchKeepsTheAppAlive()
    {
        // Without the switch, the probe's io_uring_setup is fatal: the filter is real.
        using (var unprotected = StartSampleUnderFilter("kill"))
        {
            int exitCode = await unprotected.WaitForExitAsync(TimeSpan.FromSeconds(60));
            output.WriteLine($"without the switch: exit {exitCode}\n{unprotected.Output}");
            Assert.Equal(128 + 31, exitCode); // SIGSYS
            Assert.DoesNotContain("Now listening", unprotected.Output);
        }

        using var app = StartSampleUnderFilter("kill", new() { [IoUringTransportOptions.DisableEnvironmentVariable] = "1" });
        Uri address = await app.ListeningAsync(TimeSpan.FromSeconds(60));
        using var client = new HttpClient { BaseAddress = address };
        Assert.Contains("served by the Sockets transport", await client.GetStringAsync("/"));
        Assert.Equal("Degraded", await client.GetStringAsync("/healthz"));
        Assert.False(app.Process.HasExited);
        Assert.Contains($"turned off by the environment variable {IoUringTransportOptions.DisableEnvironmentVariable}", app.Output);
    }
}

/// <summary>
/// A [Fact] that needs libseccomp's Python binding (python3-seccomp binds to Debian's /usr/bin/python3, not to
/// whichever python3 is first on PATH); skipped, saying so, where it cannot be imported.
/// </summary>
public sealed class SeccompFactAttribute : FactAttribute
{
    private static readonly string? s_whyNot = DebianPython.WhyNotImportable("seccomp", "python3-seccomp");

    public SeccompFactAttribute()
    {
        if (s_whyNot is not null)
        {
            Skip = s_whyNot;
        }
    }
}
