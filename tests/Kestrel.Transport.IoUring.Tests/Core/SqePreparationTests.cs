using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Tests.Core;

/// <summary>Every SQE helper, end to end on real loopback TCP sockets.</summary>
public sealed unsafe class SqePreparationTests
{
    private static ulong Ud(OperationKind kind, int slot = 0, uint generation = 0) => UserData.Encode(kind, generation, slot);

    [Fact]
    public void MultishotAcceptPostsOneCompletionPerConnectionUntilCancelled()
    {
        using var h = new RingHarness();
        using var listener = Loopback.Listener();
        SqePreparation.PrepareMultishotAccept(h.Sqe(), Loopback.Fd(listener), Ud(OperationKind.Accept));
        h.Pump();

        var clients = Enumerable.Range(0, 3).Select(_ =>
        {
            var c = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            c.Connect(listener.LocalEndPoint!);
            return c;
        }).ToList();
        var fds = new List<int>();
        for (int i = 0; i < 3; i++)
        {
            var cqe = h.WaitFor(Ud(OperationKind.Accept));
            Assert.True(cqe.Result >= 0, Errno.Name(cqe.Result));
            Assert.True(cqe.HasMore, "a multishot accept stays armed");
            fds.Add(cqe.Result);
        }
        Assert.Equal(3, fds.Distinct().Count());

        SqePreparation.PrepareCancel(h.Sqe(), Ud(OperationKind.Accept), Ud(OperationKind.Cancel));
        var last = h.WaitFor(Ud(OperationKind.Accept));
        Assert.Equal(-Errno.ECANCELED, last.Result);
        Assert.False(last.HasMore);
        Assert.Equal(0, h.WaitFor(Ud(OperationKind.Cancel)).Result);

        foreach (int fd in fds) LinuxSyscalls.Close(fd);
        foreach (var c in clients) c.Dispose();
    }

    [Fact]
    public void MultishotReceiveOnAFixedFileFillsProvidedBuffers()
    {
        using var h = new RingHarness();
        var (client, server) = Loopback.TcpPair();
        using var _c = client;
        using var _s = server;
        using var files = new FixedFileTable(h.Ring, 8);
        using var buffers = new ProvidedBufferRing(h.Ring, groupId: 3, entryCount: 8, bufferSize: 4096);
        int slot = files.Install(Loopback.Fd(server));
        Assert.True(slot >= 0);

        SqePreparation.PrepareMultishotReceive(h.Sqe(), slot, fixedFile: true, bufferGroup: 3, Ud(OperationKind.Receive));
        h.Pump();
        var received = new StringBuilder();
        foreach (var message in new[] { "alpha", "beta", "gamma" })
        {
            client.Send(Encoding.ASCII.GetBytes(message));
            var cqe = h.WaitFor(Ud(OperationKind.Receive));
            Assert.True(cqe.HasBuffer && cqe.HasMore, $"res={cqe.Result} flags={cqe.Flags}");
            received.Append(Encoding.ASCII.GetString(buffers.Received(cqe.BufferId, cqe.Result)));
            buffers.Release(cqe.BufferId, cqe.Result, kernelKeepsBuffer: false);
            buffers.Publish();
        }
        Assert.Equal("alphabetagamma", received.ToString());

        client.Shutdown(SocketShutdown.Send); // EOF ends the multishot: res 0, no F_MORE
        var eof = h.WaitFor(Ud(OperationKind.Receive));
        Assert.Equal(0, eof.Result);
        Assert.False(eof.HasMore);
        Assert.Equal(0, files.Remove(slot));
    }

    [Fact]
    public void SendAndVectoredSendDeliverEveryByte()
    {
        using var h = new RingHarness();
        var (client, server) = Loopback.TcpPair();
        using var _c = client;
        using var _s = server;

        byte[] single = Encoding.ASCII.GetBytes("single-send|");
        fixed (byte* p = single)
        {
            SqePreparation.PrepareSend(h.Sqe(), Loopback.Fd(server), false, p, (uint)single.Length, Ud(OperationKind.Send, 1));
            Assert.Equal(single.Length, h.WaitFor(Ud(OperationKind.Send, 1)).Result);
        }

        byte[][] parts = [Encoding.ASCII.GetBytes("one,"), Encoding.ASCII.GetBytes("two,"), Encoding.ASCII.GetBytes("three")];
        var handles = parts.Select(a => GCHandle.Alloc(a, GCHandleType.Pinned)).ToArray();
        try
        {
            IoVec* iov = stackalloc IoVec[3];
            for (int i = 0; i < 3; i++)
            {
                iov[i].Base = (void*)handles[i].AddrOfPinnedObject();
                iov[i].Length = (nuint)parts[i].Length;
            }
            MsgHdr msg = default;
            msg.Iov = iov;
            msg.IovLength = 3;
            SqePreparation.PrepareSendMessage(h.Sqe(), Loopback.Fd(server), false, &msg, Ud(OperationKind.Send, 2));
            Assert.Equal(13, h.WaitFor(Ud(OperationKind.Send, 2)).Result);
        }
        finally
        {
            foreach (var handle in handles) handle.Free();
        }

        Assert.Equal("single-send|one,two,three", Encoding.ASCII.GetString(Loopback.ReadExactly(client, 25)));
    }

    [Fact]
    public void SendZeroCopyPostsResultThenNotificationReportingTheCopy()
    {
        using var h = new RingHarness();
        var (client, server) = Loopback.TcpPair();
        using var _c = client;
        using var _s = server;
        byte[] data = new byte[64 * 1024];
        Random.Shared.NextBytes(data);
        var pin = GCHandle.Alloc(data, GCHandleType.Pinned);
        try
        {
            SqePreparation.PrepareSendZeroCopy(h.Sqe(), Loopback.Fd(server), false, (byte*)pin.AddrOfPinnedObject(), (uint)data.Length, Ud(OperationKind.Send, 5));
            h.Pump();
            // The peer reads while we wait, or a full socket buffer would hold the send back.
            byte[] got = Loopback.ReadExactly(client, data.Length);

            var result = h.WaitFor(c => c.UserData == Ud(OperationKind.Send, 5) && !c.IsNotification);
            Assert.Equal(data.Length, result.Result);
            Assert.True(result.HasMore, "a notification must follow the result");
            var notification = h.WaitFor(c => c.UserData == Ud(OperationKind.Send, 5) && c.IsNotification);
            Assert.False(notification.HasMore);
            // Loopback always copies; with SEND_ZC_REPORT_USAGE the notification says so.
            Assert.NotEqual(0u, (uint)notification.Result & IoUringValues.NotifUsageZcCopied);
            // Only now may the buffer be reused.
            Assert.Equal(data, got);
        }
        finally
        {
            pin.Free();
        }
    }

    [Fact]
    public void SendMessageZeroCopyFollowsTheSameProtocol()
    {
        using var h = new RingHarness();
        var (client, server) = Loopback.TcpPair();
        using var _c = client;
        using var _s = server;
        byte[] a = Enumerable.Range(0, 5000).Select(i => (byte)i).ToArray(), b = Enumerable.Range(0, 7000).Select(i => (byte)(i * 7)).ToArray();
        var pa = GCHandle.Alloc(a, GCHandleType.Pinned);
        var pb = GCHandle.Alloc(b, GCHandleType.Pinned);
        try
        {
            IoVec* iov = stackalloc IoVec[2];
            iov[0] = new IoVec { Base = (void*)pa.AddrOfPinnedObject(), Length = (nuint)a.Length };
            iov[1] = new IoVec { Base = (void*)pb.AddrOfPinnedObject(), Length = (nuint)b.Length };
            MsgHdr msg = default;
            msg.Iov = iov;
            msg.IovLength = 2;
            SqePreparation.PrepareSendMessageZeroCopy(h.Sqe(), Loopback.Fd(server), false, &msg, Ud(OperationKind.Send, 6));
            var result = h.WaitFor(c => c.UserData == Ud(OperationKind.Send, 6) && !c.IsNotification);
            Assert.Equal(12000, result.Result);
            h.WaitFor(c => c.UserData == Ud(OperationKind.Send, 6) && c.IsNotification);
            Assert.Equal(a.Concat(b).ToArray(), Loopback.ReadExactly(client, 12000));
        }
        finally
        {
            pa.Free();
            pb.Free();
        }
    }

    [Fact]
    public void ShutdownSendsFinToThePeer()
    {
        using var h = new RingHarness();
        var (client, server) = Loopback.TcpPair();
        using var _c = client;
        using var _s = server;
        SqePreparation.PrepareShutdown(h.Sqe(), Loopback.Fd(server), false, LinuxSyscalls.ShutWr, Ud(OperationKind.Shutdown));
        Assert.Equal(0, h.WaitFor(Ud(OperationKind.Shutdown)).Result);
        client.ReceiveTimeout = 10_000;
        Assert.Equal(0, client.Receive(new byte[1])); // FIN
    }

    [Fact]
    public void CloseAndCloseDirectReleaseTheirDescriptors()
    {
        using var h = new RingHarness();
        using var files = new FixedFileTable(h.Ring, 4);

        int plain = LinuxSyscalls.EventFd();
        SqePreparation.PrepareClose(h.Sqe(), plain, Ud(OperationKind.Close, 1));
        Assert.Equal(0, h.WaitFor(Ud(OperationKind.Close, 1)).Result);
        Assert.False(File.Exists($"/proc/self/fd/{plain}") && File.ResolveLinkTarget($"/proc/self/fd/{plain}", false)?.FullName.Contains("eventfd") == true);

        int efd = LinuxSyscalls.EventFd();
        int slot = files.Install(efd);
        LinuxSyscalls.Close(efd); // the table keeps its own reference
        SqePreparation.PrepareCloseDirect(h.Sqe(), slot, Ud(OperationKind.Close, 2));
        Assert.Equal(0, h.WaitFor(Ud(OperationKind.Close, 2)).Result);

        // The slot is empty now: using it fails with EBADF.
        ulong value;
        var sqe = h.Sqe();
        SqePreparation.PrepareEventFdRead(sqe, slot, &value, Ud(OperationKind.Test, 3));
        sqe->Flags |= SqeFlags.FixedFile;
        Assert.Equal(-Errno.EBADF, h.WaitFor(Ud(OperationKind.Test, 3)).Result);
        files.Release(slot);
    }

    [Fact]
    public void CancelByUserDataAndByFdEndAnArmedMultishotReceive()
    {
        using var h = new RingHarness();
        var (client, server) = Loopback.TcpPair();
        using var _c = client;
        using var _s = server;
        using var files = new FixedFileTable(h.Ring, 4);
        using var buffers = new ProvidedBufferRing(h.Ring, groupId: 1, entryCount: 4, bufferSize: 1024);
        int slot = files.Install(Loopback.Fd(server));

        // By user_data.
        SqePreparation.PrepareMultishotReceive(h.Sqe(), slot, true, 1, Ud(OperationKind.Receive, 1));
        h.Pump();
        SqePreparation.PrepareCancel(h.Sqe(), Ud(OperationKind.Receive, 1), Ud(OperationKind.Cancel, 1));
        var ended = h.WaitFor(Ud(OperationKind.Receive, 1));
        Assert.Equal(-Errno.ECANCELED, ended.Result);
        Assert.False(ended.HasMore);
        Assert.Equal(0, h.WaitFor(Ud(OperationKind.Cancel, 1)).Result);

        // Cancelling what is no longer there: ENOENT.
        SqePreparation.PrepareCancel(h.Sqe(), Ud(OperationKind.Receive, 1), Ud(OperationKind.Cancel, 2));
        Assert.Equal(-Errno.ENOENT, h.WaitFor(Ud(OperationKind.Cancel, 2)).Result);

        // By (fixed) fd.
        SqePreparation.PrepareMultishotReceive(h.Sqe(), slot, true, 1, Ud(OperationKind.Receive, 2));
        h.Pump();
        SqePreparation.PrepareCancelFd(h.Sqe(), slot, fixedFile: true, Ud(OperationKind.Cancel, 3));
        var endedByFd = h.WaitFor(Ud(OperationKind.Receive, 2));
        Assert.Equal(-Errno.ECANCELED, endedByFd.Result);
        Assert.Equal(1, h.WaitFor(Ud(OperationKind.Cancel, 3)).Result); // CANCEL_ALL returns the count
        files.Remove(slot);
    }

    [Fact]
    public void EventFdReadWakesTheRingFromAnotherThread()
    {
        using var h = new RingHarness();
        int efd = LinuxSyscalls.EventFd();
        ulong* counter = (ulong*)NativeMemory.AllocZeroed(8);
        try
        {
            SqePreparation.PrepareEventFdRead(h.Sqe(), efd, counter, Ud(OperationKind.Wakeup));
            h.Pump();
            var writer = new Thread(() => { ulong one = 1; LinuxSyscalls.Write(efd, &one, 8); });
            writer.Start();
            var cqe = h.WaitFor(Ud(OperationKind.Wakeup));
            Assert.Equal(8, cqe.Result);
            Assert.Equal(1UL, *counter);
            writer.Join();
        }
        finally
        {
            NativeMemory.Free(counter);
            LinuxSyscalls.Close(efd);
        }
    }

    [Fact]
    public void MessageRingPostsACompletionOnAnotherRing()
    {
        using var source = new RingHarness();
        using var target = new RingHarness();
        ulong forTarget = Ud(OperationKind.Wakeup, 77, 5);
        SqePreparation.PrepareMessageRing(source.Sqe(), target.Ring.Fd, 4242, forTarget, Ud(OperationKind.Test, 1));
        Assert.Equal(0, source.WaitFor(Ud(OperationKind.Test, 1)).Result);
        var arrived = target.WaitFor(forTarget);
        Assert.Equal(4242, arrived.Result);
    }
}
