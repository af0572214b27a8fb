using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Core;

/// <summary>The capability probe and its precise reasons when io_uring cannot be used.</summary>
public sealed class CapabilityTests(ITestOutputHelper output)
{
    [Fact]
    public void TheReportListsWhatThisKernelOffers()
    {
        var caps = IoUringCapabilities.Probe();
        string report = caps.ToString();
        output.WriteLine(report);
        Assert.StartsWith($"io_uring on Linux {caps.KernelRelease}: usable", report);
        foreach (string feature in new[] { "SINGLE_MMAP", "NODROP", "EXT_ARG", "FAST_POLL", "CQE_SKIP", "REG_REG_RING", "RECVSEND_BUNDLE" })
        {
            Assert.Contains(feature, caps.Features);
            Assert.Contains(feature, report);
        }
        foreach (string flag in new[] { "SINGLE_ISSUER", "DEFER_TASKRUN", "SUBMIT_ALL", "COOP_TASKRUN", "NO_SQARRAY" })
        {
            Assert.Contains(flag, caps.SetupFlags);
        }
        foreach (string op in new[] { "ACCEPT", "RECV", "SEND", "SENDMSG", "SEND_ZC", "SENDMSG_ZC", "SHUTDOWN", "CLOSE", "ASYNC_CANCEL", "MSG_RING", "FIXED_FD_INSTALL" })
        {
            Assert.Contains(op, caps.Opcodes);
        }
        Assert.True(caps.IncrementalBufferRings && caps.ReceiveBundles && caps.RegisteredRingFd);
        Assert.Same(IoUringCapabilities.Current, IoUringCapabilities.Current);
    }

    [Fact]
    public void ThisKernelSupportsTheFullPath()
    {
        var caps = IoUringCapabilities.Probe();
        Assert.True(caps.IsSupported, caps.UnavailableReason);
        Assert.Null(caps.UnavailableReason);
        Assert.True(caps.MultishotAccept && caps.MultishotReceive && caps.BufferRings && caps.SendZeroCopy);
        Assert.Contains("DEFER_TASKRUN", caps.SetupFlags);
        Assert.Contains("SINGLE_ISSUER", caps.SetupFlags);
        Assert.Contains("NODROP", caps.Features);
        Assert.Contains("SEND_ZC", caps.Opcodes);
        string report = caps.ToString();
        Assert.Contains("usable", report);
        Assert.Contains("DEFER_TASKRUN", report);
    }

    [Fact]
    public void EpermNamesSeccompOrTheSysctl()
    {
        var caps = IoUringCapabilities.Probe(simulatedSetupErrno: 1);
        Assert.False(caps.IsSupported);
        Assert.Equal("EPERM", caps.SetupError);
        Assert.Contains("EPERM", caps.UnavailableReason);
        Assert.Contains("io_uring_disabled", caps.UnavailableReason);
        Assert.Contains("NOT usable", caps.ToString());
    }

    [Fact]
    public void EnosysSaysTheKernelHasNoIoUring()
    {
        var caps = IoUringCapabilities.Probe(simulatedSetupErrno: 38);
        Assert.False(caps.IsSupported);
        Assert.Equal("ENOSYS", caps.SetupError);
        Assert.Contains("ENOSYS", caps.UnavailableReason);
        Assert.Contains("no io_uring", caps.UnavailableReason);
        Assert.Contains("NOT usable", caps.ToString());
        Assert.Empty(caps.Opcodes); // nothing else was probed
    }

    [Fact]
    public void AnywhereButLinuxNothingIsProbedAndTheReportSaysWhy()
    {
        // simulatedSetupErrno would show up as the reason had the probe run.
        var caps = IoUringCapabilities.Probe(simulatedSetupErrno: 1, simulatedOperatingSystem: "Darwin 24.1.0");
        Assert.False(caps.IsSupported);
        Assert.Null(caps.SetupError);
        Assert.Equal("io_uring exists only on Linux and this is Darwin 24.1.0", caps.UnavailableReason);
        Assert.Empty(caps.Opcodes);
        Assert.StartsWith("io_uring on Darwin 24.1.0: NOT usable", caps.ToString());
    }
}
