using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Tests.Containers;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Semantics;

/// <summary>
/// <see cref="IoUringTransportOptions.RingThreadPolicy"/>: the kernel's own view of each ring thread's policy
/// (/proc/self/task/TID/stat), the start-up line, configuration binding and validation, and a kernel that refuses.
/// </summary>
public sealed class RingThreadPolicyTests(ITestOutputHelper output)
{
    private const int SchedOther = 0, SchedBatch = 3;

    [Theory]
    [InlineData(null, SchedBatch, "ring threads SCHED_BATCH")]
    [InlineData(RingThreadPolicy.Batch, SchedBatch, "ring threads SCHED_BATCH")]
    [InlineData(RingThreadPolicy.Normal, SchedOther, "ring threads SCHED_OTHER")]
    public async Task EveryRingThreadRunsUnderThePolicyTheOptionNames(RingThreadPolicy? policy, int kernelPolicy, string startLine)
    {
        await using var server = await IoUringTestServer.StartAsync(configureTransport: o =>
        {
            o.RingCount = 2;
            if (policy is { } p)
            {
                o.RingThreadPolicy = p;
            }
        });
        using var client = server.CreateClient();
        Assert.Equal("hello", await client.GetStringAsync("/"));

        Assert.Equal(2, server.Factory.Rings.Count);
        foreach (var ring in server.Factory.Rings)
        {
            int tid = await RingAccess.RunOnRingAsync(ring, _ => GetThreadId());
            Assert.Equal(kernelPolicy, KernelPolicyOf(tid));
        }
        var started = Assert.Single(server.Logs.Records, r => r.EventId.Name == "TransportStarted");
        Assert.Contains(startLine, started.Message);
    }

    [Fact]
    public async Task RingThreadPolicyBindsFromConfiguration()
    {
        using var host = OptionsAndFallbackTests.BuildHostWithConfiguration(new() { ["Kestrel:IoUring:RingThreadPolicy"] = "Normal" });
        await host.StartAsync();
        try
        {
            Assert.Equal(RingThreadPolicy.Normal, host.Services.GetRequiredService<IOptions<IoUringTransportOptions>>().Value.RingThreadPolicy);
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Fact]
    public async Task AnUnknownRingThreadPolicyFailsStartUpNamingTheOption()
    {
        var e = await Assert.ThrowsAnyAsync<Exception>(() => IoUringTestServer.StartAsync(configureTransport: o => o.RingThreadPolicy = (RingThreadPolicy)7));
        var validation = e as OptionsValidationException ?? e.InnerException as OptionsValidationException;
        Assert.NotNull(validation);
        Assert.Contains("IoUringTransportOptions.RingThreadPolicy", validation!.Message);
        Assert.Contains("Batch or Normal", validation.Message);
    }

    [Fact]
    public async Task AnUnknownRingThreadPolicyInConfigurationFailsStartUpNamingTheConfigurationPath()
    {
        using var host = OptionsAndFallbackTests.BuildHostWithConfiguration(new() { ["Kestrel:IoUring:RingThreadPolicy"] = "Realtime" });
        var e = await Assert.ThrowsAnyAsync<InvalidOperationException>(() => host.StartAsync());
        Assert.Contains("Kestrel:IoUring:RingThreadPolicy", e.Message);
    }

    /// <summary>
    /// A real seccomp filter makes sched_setscheduler fail with EPERM (as a locked-down sandbox may): the sample still
    /// serves over io_uring, and the transport says once, by errno name, that its ring thread runs under the default policy.
    /// </summary>
    [SeccompFact]
    public async Task WhenTheKernelRefusesSchedBatchTheRingWarnsOnceAndServes()
    {
        const string filter = """
            import errno, os, sys, seccomp
            f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
            f.add_rule(seccomp.ERRNO(errno.EPERM), "sched_setscheduler")
            f.load()
            os.execvp(sys.argv[1], sys.argv[1:])
            """;
        string sample = Path.Combine(AppContext.BaseDirectory, "IoUringSample.dll");
        using var app = ChildProcess.Start(DebianPython.Path,
            ["-c", filter, "dotnet", sample, "--urls", "http://127.0.0.1:0", "--Kestrel:IoUring:RingCount", "1"]);
        Uri address = await app.ListeningAsync(TimeSpan.FromSeconds(60));
        using var client = new HttpClient { BaseAddress = address };
        Assert.Contains("served over io_uring", await client.GetStringAsync("/"));
        Assert.DoesNotContain("Sockets", await client.GetStringAsync("/"));
        output.WriteLine(app.Output);

        string[] lines = app.Output.Split('\n');
        int warning = Array.FindIndex(lines, l => l.StartsWith("warn: Kestrel.Transport.IoUring.Lifetime[113]", StringComparison.Ordinal));
        Assert.True(warning >= 0, "no RingThreadPolicyRefused warning");
        Assert.Contains("EPERM", lines[warning + 1]);
        Assert.Single(lines, l => l.StartsWith("warn: Kestrel.Transport.IoUring.Lifetime[113]", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("ring threads SCHED_OTHER", StringComparison.Ordinal));
    }

    /// <summary>
    /// A thread created by a ring thread inherits SCHED_BATCH (Linux copies the creator's policy): the guard returns
    /// thread-pool workers, and threads still carrying a ring thread's name without being one, to SCHED_OTHER, and
    /// leaves every other thread's policy alone.
    /// </summary>
    [Theory]
    [InlineData(InheritedPolicyGuard.PoolWorkerName, SchedOther)]
    [InlineData("io_uring ring 7", SchedOther)] // a worker that has not named itself yet
    [InlineData("app batch work", SchedBatch)] // an application thread that chose SCHED_BATCH keeps it
    public void ThreadsThatInheritedSchedBatchAreReturnedToSchedOther(string threadName, int expectedPolicy)
    {
        using var ready = new ManualResetEventSlim();
        using var done = new ManualResetEventSlim();
        int tid = 0, setResult = -1;
        var thread = new Thread(() =>
        {
            tid = GetThreadId();
            setResult = LinuxSyscalls.SetCurrentThreadSchedulingPolicy(ThreadSchedulingPolicy.Batch);
            ready.Set();
            done.Wait();
        }) { IsBackground = true, Name = threadName };
        thread.Start();
        try
        {
            Assert.True(ready.Wait(TimeSpan.FromSeconds(10)));
            Assert.Equal(0, setResult);
            Assert.Equal(threadName, File.ReadAllText($"/proc/self/task/{tid}/comm").TrimEnd('\n'));
            // No check that it is still SCHED_BATCH here: the ring threads of servers in tests running in parallel
            // run the same guard whenever their pool grows, and may already have reset a pool-named thread.

            InheritedPolicyGuard.ResetPoolWorkers();

            Assert.Equal(expectedPolicy, KernelPolicyOf(tid));
        }
        finally
        {
            done.Set();
            thread.Join();
        }
    }

    /// <summary>Under load that makes the pool run work the ring threads queue, no pool worker ends up under SCHED_BATCH.</summary>
    [Fact]
    public async Task NoThreadPoolWorkerRunsUnderSchedBatchAfterLoad()
    {
        await using var server = await IoUringTestServer.StartAsync(configureTransport: o => o.RingCount = 2);
        using var client = server.CreateClient();
        await Task.WhenAll(Enumerable.Range(0, 200).Select(async _ => Assert.Equal("hello", await client.GetStringAsync("/"))));

        var batchWorkers = Directory.EnumerateDirectories("/proc/self/task")
            .Select(task => (Tid: int.Parse(Path.GetFileName(task)), Name: NameOrNull(task)))
            .Where(t => t.Name == InheritedPolicyGuard.PoolWorkerName && SafePolicyOf(t.Tid) == SchedBatch)
            .ToList();
        Assert.Empty(batchWorkers);
        Assert.Contains(server.Factory.Rings, r => r.SchedulingPolicy == ThreadSchedulingPolicy.Batch);
    }

    /// <summary>A thread's name, or null when it ended while the test looked (threads of other tests come and go).</summary>
    private static string? NameOrNull(string task)
    {
        try
        {
            return File.ReadAllText(Path.Combine(task, "comm")).TrimEnd('\n');
        }
        catch (IOException)
        {
            return null;
        }
    }

    private static int SafePolicyOf(int tid)
    {
        try
        {
            return KernelPolicyOf(tid);
        }
        catch (IOException)
        {
            return -1; // the thread ended meanwhile
        }
    }

    /// <summary>Field 41 of /proc/self/task/TID/stat: the thread's scheduling policy as the kernel holds it.</summary>
    private static int KernelPolicyOf(int tid)
    {
        string stat = File.ReadAllText($"/proc/self/task/{tid}/stat");
        // The command name (field 2) is parenthesised and may hold spaces ("io_uring ring 0"): count after its ')'.
        string[] rest = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return int.Parse(rest[41 - 3]);
    }

    [DllImport("libc", EntryPoint = "gettid")]
    private static extern int GetThreadId();
}
