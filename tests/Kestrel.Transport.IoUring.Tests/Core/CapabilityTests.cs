namespace Kestrel.Transport.IoUring.Tests.Core;

/// <summary>The capability probe and its precise reasons when io_uring cannot be used.</summary>
public sealed class CapabilityTests
{
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
        Assert.Contains("no io_uring", caps.UnavailableReason);
    }
}
