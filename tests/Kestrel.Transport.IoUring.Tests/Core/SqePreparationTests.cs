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

    /// <summary>
    /// Waits for the two completions of a zero-copy send, in arrival order: first the result with F_MORE, then the
    /// notification (F_NOTIF, no F_MORE) whose res reports that loopback copied the data.
    /// </summary>
    private static void ExpectZeroCopyProtocol(RingHarness h, ulong ud, int expectedBytes)
    {
        var first = h.WaitFor(ud);
        Assert.False(first.IsNotification, "the notification overtook the result");
        Assert.Equal(expectedBytes, first.Result);
        Assert.True(first.HasMore, "F_MORE on the result announces the notification");
        var second = h.WaitFor(ud);
        Assert.True(second.IsNotification, $"second CQE flags={second.Flags}");
        Assert.False(second.HasMore, "the notification is the last CQE of the request");
        Assert.NotEqual(0u, (uint)second.Result & IoUringValues.NotifUsageZcCopied); // loopback always copies (REPORT_USAGE)
    }

    [Fact]
    public void SendZeroCopyPostsResultThenNotificationAndTheBufferIsReusedOnlyAfterIt()
    {
        using var h = new RingHarness();
        var (client, server) = Loopback.TcpPair();
        using var _c = client;
        using var _s = server;
        const int Size = 64 * 1024;
        byte* buffer = (byte*)NativeMemory.Alloc(Size);
        try
        {
            var span = new Span<byte>(buffer, Size);
            for (int round = 0; round < 3; round++)
            {
                // The buffer is rewritten only here, after the previous round's notification.
                Random.Shared.NextBytes(span);
                byte[] expected = span.ToArray();
                ulong ud = Ud(OperationKind.Send, 5, (uint)round);
                SqePreparation.PrepareSendZeroCopy(h.Sqe(), Loopback.Fd(server), false, buffer, Size, ud);
                h.Pump();
                // The peer reads while the send runs, or a full socket buffer would hold it back.
                Assert.Equal(expected, Loopback.ReadExactly(client, Size));
                ExpectZeroCopyProtocol(h, ud, Size);
            }
        }
        finally
        {
            NativeMemory.Free(buffer);
        }
    }

    [Fact]
    public void SendZeroCopyFromARegisteredBufferFollowsTheSameProtocol()
    {
        using var h = new RingHarness();
        using var arena = new RegisteredBufferArena(h.Ring, chunkCount: 2, chunkSize: 16 * 1024);
        var (client, server) = Loopback.TcpPair();
        using var _c = client;
        using var _s = server;
        Assert.True(arena.TryRent(out int chunk, out byte* p));
        var data = new Span<byte>(p, arena.ChunkSize);
        Random.Shared.NextBytes(data);
        byte[] expected = data.ToArray();
        SqePreparation.PrepareSendZeroCopy(h.Sqe(), Loopback.Fd(server), false, p, (uint)arena.ChunkSize, Ud(OperationKind.ArenaSend, 1),
            registeredBufferIndex: RegisteredBufferArena.BufferIndex);
        h.Pump();
        Assert.Equal(expected, Loopback.ReadExactly(client, arena.ChunkSize));
        ExpectZeroCopyProtocol(h, Ud(OperationKind.ArenaSend, 1), arena.ChunkSize);
        arena.Return(chunk);
    }

    [Fact]
    public void SendMessageZeroCopyWithThreeSegmentsFollowsTheSameProtocol()
    {
        using var h = new RingHarness();
        var (client, server) = Loopback.TcpPair();
        using var _c = client;
        using var _s = server;
        byte[][] parts = [new byte[5000], new byte[7000], new byte[3000]];
        foreach (var part in parts) Random.Shared.NextBytes(part);
        var handles = parts.Select(a => GCHandle.Alloc(a, GCHandleType.Pinned)).ToArray();
        try
        {
            IoVec* iov = stackalloc IoVec[3];
            for (int i = 0; i < 3; i++)
            {
                iov[i] = new IoVec { Base = (void*)handles[i].AddrOfPinnedObject(), Length = (nuint)parts[i].Length };
            }
            MsgHdr msg = default;
            msg.Iov = iov;
            msg.IovLength = 3;
            SqePreparation.PrepareSendMessageZeroCopy(h.Sqe(), Loopback.Fd(server), false, &msg, Ud(OperationKind.Send, 6));
            h.Pump();
            Assert.Equal(parts.SelectMany(a => a).ToArray(), Loopback.ReadExactly(client, 15000));
            ExpectZeroCopyProtocol(h, Ud(OperationKind.Send, 6), 15000);
        }
        finally
        {
            foreach (var handle in handles) handle.Free();
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
    public void CloseReleasesTheSocketAndThePeerSeesEof()
    {
        using var h = new RingHarness();
        using var listener = Loopback.Listener();
        var (client, serverFd) = Loopback.ClientAndRawServerFd(h, listener, Ud(OperationKind.Accept));
        using var _c = client;

        SqePreparation.PrepareClose(h.Sqe(), serverFd, Ud(OperationKind.Close, 1));
        Assert.Equal(0, h.WaitFor(Ud(OperationKind.Close, 1)).Result);
        Assert.True(Loopback.SeesEof(client), "the socket's last reference was not dropped");
    }

    [Fact]
    public void CloseDirectEmptiesTheSlotAndReleasesTheSocket()
    {
        using var h = new RingHarness();
        using var files = new FixedFileTable(h.Ring, 4);
        using var listener = Loopback.Listener();
        var (client, serverFd) = Loopback.ClientAndRawServerFd(h, listener, Ud(OperationKind.Accept));
        using var _c = client;
        int slot = files.Install(serverFd);
        Assert.True(slot >= 0, Errno.Name(slot));
        Assert.Equal(0, LinuxSyscalls.Close(serverFd)); // the table keeps the socket alive on its own

        byte[] hello = "via-slot"u8.ToArray();
        fixed (byte* p = hello)
        {
            SqePreparation.PrepareSend(h.Sqe(), slot, fixedFile: true, p, (uint)hello.Length, Ud(OperationKind.Send, 1));
            Assert.Equal(hello.Length, h.WaitFor(Ud(OperationKind.Send, 1)).Result);
        }
        Assert.Equal(hello, Loopback.ReadExactly(client, hello.Length));

        SqePreparation.PrepareCloseDirect(h.Sqe(), slot, Ud(OperationKind.Close, 2));
        Assert.Equal(0, h.WaitFor(Ud(OperationKind.Close, 2)).Result);
        Assert.True(Loopback.SeesEof(client), "close-direct did not drop the table's reference");

        // The slot is empty now: using it fails with EBADF.
        fixed (byte* p = hello)
        {
            SqePreparation.PrepareSend(h.Sqe(), slot, fixedFile: true, p, (uint)hello.Length, Ud(OperationKind.Send, 2));
            Assert.Equal(-Errno.EBADF, h.WaitFor(Ud(OperationKind.Send, 2)).Result);
        }
        files.Release(slot);
    }

    [Fact]
    public void MultishotAcceptIntoDirectDescriptorsThenReceiveAndCloseThroughTheSlots()
    {
        using var h = new RingHarness();
        using var files = new FixedFileTable(h.Ring, 8); // sparse: the kernel allocates from it for FILE_INDEX_ALLOC
        using var listener = Loopback.Listener();
        SqePreparation.PrepareMultishotAccept(h.Sqe(), Loopback.Fd(listener), Ud(OperationKind.Accept), directDescriptor: true);
        h.Pump();

        var clients = new List<Socket>();
        var slots = new List<int>();
        try
        {
            for (int i = 0; i < 3; i++)
            {
                var c = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                c.Connect(listener.LocalEndPoint!);
                clients.Add(c);
                var cqe = h.WaitFor(Ud(OperationKind.Accept));
                Assert.True(cqe.Result >= 0 && cqe.Result < 8, $"expected a slot, got {Errno.Name(cqe.Result)}");
                Assert.True(cqe.HasMore);
                slots.Add(cqe.Result);
            }
            Assert.Equal(3, slots.Distinct().Count());

            // A single recv on each slot gets what its own client sent.
            byte[] buffer = new byte[64];
            fixed (byte* p = buffer)
            {
                for (int i = 0; i < 3; i++)
                {
                    clients[i].Send(Encoding.ASCII.GetBytes($"client-{i}"));
                    SqePreparation.PrepareReceive(h.Sqe(), slots[i], fixedFile: true, p, (uint)buffer.Length, Ud(OperationKind.Receive, i));
                    var cqe = h.WaitFor(Ud(OperationKind.Receive, i));
                    Assert.Equal($"client-{i}", Encoding.ASCII.GetString(buffer, 0, cqe.Result));
                }
            }

            for (int i = 0; i < 3; i++)
            {
                SqePreparation.PrepareCloseDirect(h.Sqe(), slots[i], Ud(OperationKind.Close, i));
                Assert.Equal(0, h.WaitFor(Ud(OperationKind.Close, i)).Result);
                Assert.True(Loopback.SeesEof(clients[i]));
            }
        }
        finally
        {
            SqePreparation.PrepareCancel(h.Sqe(), Ud(OperationKind.Accept), Ud(OperationKind.Cancel));
            h.WaitFor(c => c.UserData == Ud(OperationKind.Accept) && !c.HasMore);
            foreach (var c in clients) c.Dispose();
        }
    }

    [Fact]
    public void LinkTimeoutCancelsARecvThatGetsNoData()
    {
        using var h = new RingHarness();
        var (client, server) = Loopback.TcpPair();
        using var _c = client;
        using var _s = server;
        byte[] buffer = new byte[16];
        var ts = new KernelTimespec { Nanoseconds = 10_000_000 };
        fixed (byte* p = buffer)
        {
            var recv = h.Sqe();
            SqePreparation.PrepareReceive(recv, Loopback.Fd(server), false, p, (uint)buffer.Length, Ud(OperationKind.Receive));
            recv->Flags |= SqeFlags.IoLink;
            SqePreparation.PrepareLinkTimeout(h.Sqe(), &ts, Ud(OperationKind.Timeout));
            Assert.Equal(-Errno.ECANCELED, h.WaitFor(Ud(OperationKind.Receive)).Result);
            Assert.Equal(-Errno.ETIME, h.WaitFor(Ud(OperationKind.Timeout)).Result);
        }
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
        Assert.False(endedByFd.HasMore);
        Assert.Equal(1, h.WaitFor(Ud(OperationKind.Cancel, 3)).Result); // CANCEL_ALL returns the count
        files.Remove(slot);

        // By plain fd: a multishot recv on the socket's own descriptor.
        SqePreparation.PrepareMultishotReceive(h.Sqe(), Loopback.Fd(server), false, 1, Ud(OperationKind.Receive, 3));
        h.Pump();
        SqePreparation.PrepareCancelFd(h.Sqe(), Loopback.Fd(server), fixedFile: false, Ud(OperationKind.Cancel, 4));
        var endedByPlainFd = h.WaitFor(Ud(OperationKind.Receive, 3));
        Assert.Equal(-Errno.ECANCELED, endedByPlainFd.Result);
        Assert.False(endedByPlainFd.HasMore);
        Assert.Equal(1, h.WaitFor(Ud(OperationKind.Cancel, 4)).Result);

        // The data sent meanwhile was not consumed by the cancelled receives: a new one gets it.
        client.Send("after-cancel"u8.ToArray());
        SqePreparation.PrepareMultishotReceive(h.Sqe(), Loopback.Fd(server), false, 1, Ud(OperationKind.Receive, 4));
        var data = h.WaitFor(Ud(OperationKind.Receive, 4));
        Assert.True(data.HasBuffer && data.HasMore, $"res={data.Result} flags={data.Flags}");
        Assert.Equal("after-cancel", Encoding.ASCII.GetString(buffers.Received(data.BufferId, data.Result)));
        SqePreparation.PrepareCancelFd(h.Sqe(), Loopback.Fd(server), fixedFile: false, Ud(OperationKind.Cancel, 5));
        h.WaitFor(c => c.UserData == Ud(OperationKind.Receive, 4) && !c.HasMore);
    }

    [Fact]
    public void EventFdReadWakesTheRingFromAnotherThread()
    {
        using var h = new RingHarness();
        int efd = LinuxSyscalls.EventFd();
        Assert.True(efd >= 0, Errno.Name(efd));
        ulong* counter = (ulong*)NativeMemory.AllocZeroed(8);
        try
        {
            SqePreparation.PrepareEventFdRead(h.Sqe(), efd, counter, Ud(OperationKind.Wakeup));
            Assert.Equal(1, h.Ring.Submit());

            // The ring thread blocks in io_uring_enter for up to 10 s; the other thread's write must end that wait.
            using var aboutToWait = new ManualResetEventSlim();
            int written = 0;
            var writer = new Thread(() =>
            {
                aboutToWait.Wait();
                ulong one = 1;
                written = LinuxSyscalls.Write(efd, &one, 8);
            });
            writer.Start();
            var sw = System.Diagnostics.Stopwatch.StartNew();
            aboutToWait.Set();
            Assert.True(h.Ring.SubmitAndWait(1, timeoutNanoseconds: 10_000_000_000) >= 0);
            sw.Stop();
            Assert.True(writer.Join(TimeSpan.FromSeconds(10)));
            Assert.Equal(8, written);
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(9), $"the write did not wake the ring ({sw.Elapsed})");
            Assert.Equal(1u, h.Ring.ReadyCompletions);

            var cqe = h.WaitFor(Ud(OperationKind.Wakeup));
            Assert.Equal(8, cqe.Result);
            Assert.Equal(1UL, *counter);
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
        Assert.Empty(source.TakeAll()); // nothing posted back on the sender's ring
    }

    [Fact]
    public void MessageRingWakesARingBlockedOnItsOwnThread()
    {
        using var source = new RingHarness();
        ulong forTarget = Ud(OperationKind.Wakeup, 3, 9);
        using var targetReady = new ManualResetEventSlim();
        int targetFd = -1;
        IoUringCqe? arrived = null;
        Exception? failure = null;
        var targetThread = new Thread(() =>
        {
            try
            {
                using var target = new RingHarness(); // owned by this thread, as SINGLE_ISSUER wants
                targetFd = target.Ring.Fd;
                targetReady.Set();
                arrived = target.WaitFor(forTarget);
            }
            catch (Exception e)
            {
                failure = e;
                targetReady.Set();
            }
        });
        targetThread.Start();
        Assert.True(targetReady.Wait(TimeSpan.FromSeconds(10)));
        Assert.Null(failure);

        SqePreparation.PrepareMessageRing(source.Sqe(), targetFd, -7, forTarget, Ud(OperationKind.Test, 2));
        Assert.Equal(0, source.WaitFor(Ud(OperationKind.Test, 2)).Result);
        Assert.True(targetThread.Join(TimeSpan.FromSeconds(15)), "the target ring never saw the message");
        Assert.Null(failure);
        Assert.Equal(-7, arrived!.Value.Result);
        Assert.Equal(forTarget, arrived.Value.UserData);
    }
}
