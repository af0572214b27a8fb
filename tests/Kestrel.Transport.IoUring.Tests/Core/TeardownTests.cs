using Kestrel.Transport.IoUring.Core;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Protocols;

namespace Kestrel.Transport.IoUring.Tests.Core;

/// <summary>Teardown leaves no descriptor behind: rings, buffer rings, fixed tables and registered arenas.</summary>
[Collection(HeavyProtocolCollection.Name)] // serial: nothing else opens descriptors meanwhile
public sealed unsafe class TeardownTests
{
    [Fact]
    public void RingsAndTheirRegistrationsReleaseEveryDescriptor()
    {
        // Warm: the first ring loads code and lazily opened runtime files.
        using (var warm = new RingHarness()) { }
        int before = FdCounter.Count();
        for (int i = 0; i < 50; i++)
        {
            using var h = new RingHarness(sqEntries: 64, cqEntries: 256);
            using var buffers = new ProvidedBufferRing(h.Ring, 1, 16, 4096);
            using var files = new FixedFileTable(h.Ring, 64);
            using var arena = new RegisteredBufferArena(h.Ring, 4, 64 * 1024);
            SqePreparation.PrepareNop(h.Sqe(), 1);
            h.WaitFor(1);
        }
        Assert.Equal(before, FdCounter.Count());
    }

    [Fact]
    public void CapabilityProbeLeavesNoDescriptorBehind()
    {
        IoUringCapabilities.Probe();
        int before = FdCounter.Count();
        for (int i = 0; i < 5; i++)
        {
            Assert.True(IoUringCapabilities.Probe().IsSupported);
        }
        Assert.Equal(before, FdCounter.Count());
    }
}
