using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.Configuration;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Kestrel.Transport.IoUring.Tests.Semantics;

/// <summary>Bad options fail start-up by name; an unusable io_uring gives one warning naming why, and Sockets serves.</summary>
public sealed class OptionsAndFallbackTests
{
    private static void MapWhoServes(WebApplication app)
        => app.MapGet("/", (HttpContext c) => c.Features.Get<IIoUringConnectionFeature>() is null ? "sockets" : "io_uring");

    public static TheoryData<string, Action<IoUringTransportOptions>> InvalidOptions => new()
    {
        { nameof(IoUringTransportOptions.RingCount), o => o.RingCount = 0 },
        { nameof(IoUringTransportOptions.SubmissionQueueSize), o => o.SubmissionQueueSize = 100 },
        { nameof(IoUringTransportOptions.CompletionQueueSize), o => { o.SubmissionQueueSize = 64; o.CompletionQueueSize = 64; } },
        { nameof(IoUringTransportOptions.ReceiveBufferCount), o => o.ReceiveBufferCount = 3 },
        { nameof(IoUringTransportOptions.ReceiveBufferSize), o => o.ReceiveBufferSize = 10 },
        { nameof(IoUringTransportOptions.Backlog), o => o.Backlog = 0 },
        { nameof(IoUringTransportOptions.ZeroCopySendThreshold), o => o.ZeroCopySendThreshold = -1 },
        { nameof(IoUringTransportOptions.RegisteredSendBufferSize), o => o.RegisteredSendBufferSize = 1000 },
        { nameof(IoUringTransportOptions.MaxReadBufferSize), o => o.MaxReadBufferSize = -5 },
    };

    [Theory]
    [MemberData(nameof(InvalidOptions))]
    public async Task InvalidOptionsFailStartUpNamingTheOption(string option, Action<IoUringTransportOptions> configure)
    {
        var e = await Assert.ThrowsAnyAsync<Exception>(() => IoUringTestServer.StartAsync(configureTransport: configure));
        var validation = e as OptionsValidationException ?? e.InnerException as OptionsValidationException
            ?? (e.InnerException?.InnerException as OptionsValidationException);
        Assert.NotNull(validation);
        // The property and the configuration key, and no "256.; " between failures.
        Assert.Contains($"IoUringTransportOptions.{option} (Kestrel:IoUring:{option})", validation!.Message);
        Assert.DoesNotContain(".;", validation.Message);
    }

    [Fact]
    public async Task ASubmissionQueueTooLargeForTheCompletionQueueNamesBothAndWhatToChange()
    {
        var e = await Assert.ThrowsAnyAsync<OptionsValidationException>(() => StartTestHostAsync(new() { ["Kestrel:IoUring:SubmissionQueueSize"] = "8192" }));
        string failure = Assert.Single(e.Failures);
        Assert.Contains("IoUringTransportOptions.CompletionQueueSize (Kestrel:IoUring:CompletionQueueSize) is 8192", failure);
        Assert.Contains("IoUringTransportOptions.SubmissionQueueSize (Kestrel:IoUring:SubmissionQueueSize), which is 8192", failure);
        Assert.Contains("raise CompletionQueueSize to 16384 or lower SubmissionQueueSize to 4096", failure);
    }

    [Fact]
    public async Task InvalidOptionsFailWhenTheHostStartsBeforeAnyBind()
    {
        // TestServer binds nothing: only ValidateOnStart can fail this start.
        var e = await Assert.ThrowsAnyAsync<OptionsValidationException>(() => StartTestHostAsync(new()
        {
            ["Kestrel:IoUring:RingCount"] = "0",
            ["Kestrel:IoUring:Backlog"] = "0",
        }));
        Assert.Equal(2, e.Failures.Count());
        Assert.Equal(
            "IoUringTransportOptions.RingCount (Kestrel:IoUring:RingCount) is 0; it must be between 1 and 256; "
            + "IoUringTransportOptions.Backlog (Kestrel:IoUring:Backlog) is 0; it must be at least 1",
            e.Message);
    }

    private static async Task StartTestHostAsync(Dictionary<string, string?> settings)
    {
        using var host = new HostBuilder()
            .ConfigureAppConfiguration(c => c.AddInMemoryCollection(settings))
            .ConfigureWebHost(web => web.UseTestServer().UseIoUring().Configure(_ => { }))
            .Build();
        await host.StartAsync();
        await host.StopAsync();
    }

    internal static IHost BuildHostWithConfiguration(Dictionary<string, string?> settings)
        => new HostBuilder()
            .ConfigureAppConfiguration(c => c.AddInMemoryCollection(settings))
            .ConfigureWebHost(web => web
                .UseKestrel(o => o.Listen(System.Net.IPAddress.Loopback, 0))
                .UseIoUring()
                .Configure(app => app.Run(c => c.Response.WriteAsync("hello"))))
            .Build();

    [Fact]
    public async Task OptionsBindFromTheKestrelIoUringConfigurationSection()
    {
        // What "Kestrel": { "IoUring": { "RingCount": 1, ... } } in appsettings.json does, through UseIoUring's own binding.
        using var host = BuildHostWithConfiguration(new()
        {
            ["Kestrel:IoUring:RingCount"] = "1",
            ["Kestrel:IoUring:ReceiveBufferCount"] = "256",
            ["Kestrel:IoUring:FinOnError"] = "true",
        });
        await host.StartAsync();
        try
        {
            var factory = host.Services.GetRequiredService<IoUringTransportFactory>();
            Assert.True(factory.IsUsingIoUring);
            Assert.Equal(1, factory.RingCount);
            var options = host.Services.GetRequiredService<IOptions<IoUringTransportOptions>>().Value;
            Assert.Equal(256, options.ReceiveBufferCount);
            Assert.True(options.FinOnError);
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Fact]
    public async Task AnInvalidValueFromConfigurationFailsStartUpNamingTheOption()
    {
        using var host = BuildHostWithConfiguration(new() { ["Kestrel:IoUring:Backlog"] = "0" });
        var e = await Assert.ThrowsAnyAsync<Exception>(() => host.StartAsync());
        var validation = e as OptionsValidationException ?? e.InnerException as OptionsValidationException;
        Assert.NotNull(validation);
        Assert.Contains("IoUringTransportOptions.Backlog", validation!.Message);
    }

    [Fact]
    public async Task AnActionAfterConfigurationOverridesIt()
    {
        // The test server's UseIoUring action sets RingCount = 2; WebApplicationBuilder configuration says 1.
        await using var server = await IoUringTestServer.StartAsync(configureServices: services =>
        {
            var config = new ConfigurationBuilder()
                .AddInMemoryCollection(new Dictionary<string, string?> { ["Kestrel:IoUring:RingCount"] = "1" })
                .Build();
            services.Configure<IoUringTransportOptions>(config.GetSection("Kestrel:IoUring"));
        });
        // Registered after the test server's action: the last configuration wins, as for any options.
        Assert.Equal(1, server.Factory.RingCount);
    }

    [Theory]
    [InlineData(1, "EPERM")]
    [InlineData(38, "ENOSYS")]
    public async Task UnusableIoUringFallsBackToSocketsWithOneWarning(int errno, string name)
    {
        await using var server = await IoUringTestServer.StartAsync(MapWhoServes, configureTransport: o => o.SimulatedSetupErrno = errno, requireIoUring: false);
        Assert.False(server.Factory.IsUsingIoUring);
        Assert.Contains(name, server.Factory.FallbackReason);
        using var client = server.CreateClient();
        Assert.Equal("sockets", await client.GetStringAsync("/"));
        var warning = Assert.Single(server.Logs.Records, r => r.Category == TransportUnderTest.IoUringLifetimeCategory && r.Level == LogLevel.Warning);
        Assert.Equal("FallingBackToSockets", warning.EventId.Name);
        Assert.Contains(name, warning.Message);
        Assert.DoesNotContain(".)", warning.Message); // a reason reads as part of the sentence
    }

    [Fact]
    public async Task WhenUnavailableThrowFailsStartUpNamingTheReason()
    {
        var e = await Assert.ThrowsAnyAsync<Exception>(() => IoUringTestServer.StartAsync(configureTransport: o =>
        {
            o.SimulatedSetupErrno = 1;
            o.WhenUnavailable = IoUringUnavailableBehavior.Throw;
        }, requireIoUring: false));
        var root = e is PlatformNotSupportedException ? e : e.InnerException ?? e;
        Assert.IsType<PlatformNotSupportedException>(root);
        Assert.Contains("EPERM", root.Message);
        Assert.Contains("WhenUnavailable", root.Message);
    }

    [Fact]
    public async Task EnabledFalseServesWithSocketsWithoutProbing()
    {
        await using var server = await IoUringTestServer.StartAsync(MapWhoServes, configureTransport: o =>
        {
            o.Enabled = false;
            o.SimulatedSetupErrno = 1; // were io_uring probed, the reason would be EPERM
        }, requireIoUring: false);
        Assert.False(server.Factory.IsUsingIoUring);
        Assert.Contains("Enabled = false", server.Factory.FallbackReason);
        Assert.DoesNotContain("EPERM", server.Factory.FallbackReason);
        using var client = server.CreateClient();
        Assert.Equal("sockets", await client.GetStringAsync("/"));
    }

    [Fact]
    public async Task OnWindowsOrMacOsTheAppServesOverSocketsSayingWhyWithoutProbing()
    {
        await using var server = await IoUringTestServer.StartAsync(MapWhoServes, configureTransport: o =>
        {
            o.SimulatedOperatingSystem = "Microsoft Windows 10.0.26100";
            o.SimulatedSetupErrno = 1; // were io_uring probed, the reason would be EPERM
        }, requireIoUring: false);
        Assert.False(server.Factory.IsUsingIoUring);
        Assert.Equal("io_uring exists only on Linux and this is Microsoft Windows 10.0.26100", server.Factory.FallbackReason);
        using var client = server.CreateClient();
        Assert.Equal("sockets", await client.GetStringAsync("/"));
        var warning = Assert.Single(server.Logs.Records, r => r.Category.StartsWith("Kestrel.Transport.IoUring", StringComparison.Ordinal) && r.Level > LogLevel.Debug);
        Assert.Equal("FallingBackToSockets", warning.EventId.Name);
        Assert.Contains("only on Linux", warning.Message);
    }

    [Fact]
    public async Task StartUpLogsOneInformationLineNamingTheRings()
    {
        await using var server = await IoUringTestServer.StartAsync(configureTransport: o => o.RingCount = 2);
        var started = Assert.Single(server.Logs.Records, r => r.Category == TransportUnderTest.IoUringLifetimeCategory && r.EventId.Name == "TransportStarted");
        Assert.Equal(LogLevel.Information, started.Level);
        Assert.Contains("2 ring(s)", started.Message);
        Assert.Contains("multishot accept", started.Message);
        Assert.Contains("DeferTaskRun", started.Message);
        Assert.DoesNotContain(server.Logs.Records, r => r.Category.StartsWith("Kestrel.Transport.IoUring", StringComparison.Ordinal) && r.Level >= LogLevel.Warning);
        // The connection category stays as quiet as Sockets': the start-up line is not in it.
        Assert.DoesNotContain(server.Logs.Records, r => r.Category == TransportUnderTest.IoUringCategory && r.Level > LogLevel.Debug);
    }
}

/// <summary>Switches that change the whole process or machine run alone, and always restore what they changed.</summary>
[Collection(MachineWideCollection.Name)]
public sealed class MachineWideSwitchTests
{
    [Fact]
    public async Task EnvironmentVariableTurnsIoUringOffWithoutProbing()
    {
        string? before = Environment.GetEnvironmentVariable(IoUringTransportOptions.DisableEnvironmentVariable);
        try
        {
            Environment.SetEnvironmentVariable(IoUringTransportOptions.DisableEnvironmentVariable, "1");
            await using var server = await IoUringTestServer.StartAsync(configureTransport: o => o.SimulatedSetupErrno = 1, requireIoUring: false);
            Assert.False(server.Factory.IsUsingIoUring);
            Assert.Contains(IoUringTransportOptions.DisableEnvironmentVariable, server.Factory.FallbackReason);
            Assert.DoesNotContain("EPERM", server.Factory.FallbackReason); // switched off before any probe
            using var client = server.CreateClient();
            Assert.Equal("hello", await client.GetStringAsync("/"));
        }
        finally
        {
            Environment.SetEnvironmentVariable(IoUringTransportOptions.DisableEnvironmentVariable, before);
        }
    }

    [RootWithSysctlFact]
    [Trait("Category", "MachineWide")]
    public void KernelSysctlIoUringDisabledIsReportedAsThePreciseReason()
    {
        const string Sysctl = RootWithSysctlFactAttribute.Sysctl;
        string original = File.ReadAllText(Sysctl).Trim();
        try
        {
            File.WriteAllText(Sysctl, "2");
            var caps = IoUringCapabilities.Probe();
            Assert.False(caps.IsSupported);
            Assert.Equal("EPERM", caps.SetupError);
            Assert.Contains("kernel.io_uring_disabled is 2", caps.UnavailableReason);
        }
        finally
        {
            File.WriteAllText(Sysctl, original); // a machine left with io_uring disabled breaks every later run
        }
        Assert.True(IoUringCapabilities.Probe().IsSupported);
    }
}

/// <summary>A [Fact] that needs root and the kernel.io_uring_disabled sysctl; skipped, saying so, elsewhere.</summary>
public sealed class RootWithSysctlFactAttribute : FactAttribute
{
    public const string Sysctl = "/proc/sys/kernel/io_uring_disabled";

    public RootWithSysctlFactAttribute()
    {
        if (!File.Exists(Sysctl) || Environment.UserName != "root")
        {
            Skip = "needs root and the kernel.io_uring_disabled sysctl";
        }
    }
}
