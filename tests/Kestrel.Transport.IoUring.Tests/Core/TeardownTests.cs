using System.Net.Sockets;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Tests.Core;

/// <summary>Teardown leaves no descriptor behind: rings, buffer rings, fixed tables and registered arenas.</summary>
[Collection(CoreSerialCollection.Name)] // serial: nothing else opens descriptors meanwhile
public sealed unsafe class TeardownTests
{
    private static void AssertNoDescriptorLeft(int before, string what)
        => Assert.True(OpenDescriptors.SettlesAtMost(before, out int after), $"{what}: {before} fds before, {after} after");

    [Fact]
    public void RingsAloneReleaseTheirDescriptor()
    {
        using (new RingHarness()) { } // warm: the first ring loads code and lazily opened runtime files
        int before = OpenDescriptors.Count();
        int fd = -1;
        for (int i = 0; i < 50; i++)
        {
            using var h = new RingHarness(sqEntries: 8, cqEntries: 16);
            fd = h.Ring.Fd;
            Assert.True(OpenDescriptors.IsOpen(fd));
        }
        Assert.False(OpenDescriptors.IsOpen(fd) && OpenDescriptors.Count() > before, "the last ring's fd is still open");
        AssertNoDescriptorLeft(before, "50 rings");
    }

    [Fact]
    public void RingsAndTheirRegistrationsReleaseEveryDescriptor()
    {
        using (var warm = new RingHarness()) { }
        int before = OpenDescriptors.Count();
        for (int i = 0; i < 50; i++)
        {
            using var h = new RingHarness(sqEntries: 64, cqEntries: 256);
            using var buffers = new ProvidedBufferRing(h.Ring, 1, 16, 4096);
            using var incremental = new ProvidedBufferRing(h.Ring, 2, 8, 4096, incremental: true);
            using var files = new FixedFileTable(h.Ring, 64);
            using var arena = new RegisteredBufferArena(h.Ring, 4, 64 * 1024);
            SqePreparation.PrepareNop(h.Sqe(), 1);
            h.WaitFor(1);
        }
        AssertNoDescriptorLeft(before, "50 rings with buffer rings, fixed tables and arenas");
    }

    [Fact]
    public void BufferRingsAndFixedTablesComeAndGoOnOneRing()
    {
        using var h = new RingHarness();
        int before = OpenDescriptors.Count();
        for (int i = 0; i < 100; i++)
        {
            // The same group id and a new table each time: registration must have been undone, or these fail (EEXIST/EBUSY).
            using var buffers = new ProvidedBufferRing(h.Ring, 9, 32, 2048);
            using var files = new FixedFileTable(h.Ring, 16);
        }
        AssertNoDescriptorLeft(before, "100 buffer rings and fixed tables");
    }

    [Fact]
    public void ARingDisposedWithRequestsInFlightReleasesItsSockets()
    {
        using var listener = Loopback.Listener();
        var (client, server) = Loopback.TcpPair();
        using var _c = client;
        using var _s = server;
        using (new RingHarness()) { }
        int before = OpenDescriptors.Count();
        Socket slotPeer;
        using (var h = new RingHarness())
        {
            var files = new FixedFileTable(h.Ring, 4);
            var buffers = new ProvidedBufferRing(h.Ring, 1, 4, 1024);
            // A socket that lives only in the fixed table, with a multishot recv armed on it; and a multishot accept.
            var (peer, rawFd) = Loopback.ClientAndRawServerFd(h, listener, UserData.Encode(OperationKind.Accept, 0, 1));
            slotPeer = peer;
            int slot = files.Install(rawFd);
            Assert.True(slot >= 0);
            Assert.Equal(0, LinuxSyscalls.Close(rawFd));
            SqePreparation.PrepareMultishotReceive(h.Sqe(), slot, true, 1, UserData.Encode(OperationKind.Receive, 0, slot));
            SqePreparation.PrepareMultishotAccept(h.Sqe(), Loopback.Fd(listener), UserData.Encode(OperationKind.Accept, 0, 2));
            SqePreparation.PrepareMultishotReceive(h.Sqe(), Loopback.Fd(server), false, 1, UserData.Encode(OperationKind.Receive, 0, 9));
            h.Pump();
            // Dispose the ring with all of it still armed (buffers and table are dropped with the ring fd).
        }
        // Closing the ring cancels its requests and drops the table: the socket that only the table held closes.
        Assert.True(Loopback.SeesEof(slotPeer), "the fixed table's socket outlived its ring");
        // The ordinary socket is intact and still readable by ordinary means: the cancelled recv took nothing.
        client.Send("still-here"u8.ToArray());
        Assert.Equal("still-here"u8.ToArray(), Loopback.ReadExactly(server, 10));
        slotPeer.Dispose(); // opened after the count was taken
        AssertNoDescriptorLeft(before, "a ring torn down with requests in flight");
    }

    [Fact]
    public void CapabilityProbeLeavesNoDescriptorBehind()
    {
        IoUringCapabilities.Probe();
        int before = OpenDescriptors.Count();
        for (int i = 0; i < 5; i++)
        {
            Assert.True(IoUringCapabilities.Probe().IsSupported);
        }
        AssertNoDescriptorLeft(before, "5 capability probes");
    }
}
