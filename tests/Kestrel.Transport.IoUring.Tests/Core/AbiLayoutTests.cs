using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Tests.Core;

/// <summary>Every struct shared with the kernel has the uapi size and field offsets; constants match io_uring.h.</summary>
public sealed unsafe class AbiLayoutTests
{
    private static int Offset<T>(ref T baseRef, ref byte field) where T : struct
        => (int)Unsafe.ByteOffset(ref Unsafe.As<T, byte>(ref baseRef), ref field);

    [Fact]
    public void StructSizesMatchTheKernel()
    {
        Assert.Equal(64, sizeof(IoUringSqe));
        Assert.Equal(16, sizeof(IoUringCqe));
        Assert.Equal(120, sizeof(IoUringParams));
        Assert.Equal(40, sizeof(SqRingOffsets));
        Assert.Equal(40, sizeof(CqRingOffsets));
        Assert.Equal(24, sizeof(GetEventsArg));
        Assert.Equal(16, sizeof(KernelTimespec));
        Assert.Equal(16, sizeof(IoUringBuf));
        Assert.Equal(40, sizeof(IoUringBufReg));
        Assert.Equal(16, sizeof(IoUringRsrcUpdate));
        Assert.Equal(32, sizeof(IoUringRsrcRegister));
        Assert.Equal(16, sizeof(IoUringProbe));
        Assert.Equal(8, sizeof(IoUringProbeOp));
        Assert.Equal(16, sizeof(IoVec));
        Assert.Equal(56, sizeof(MsgHdr));
    }

    [Fact]
    public void SqeFieldOffsetsMatchTheKernel()
    {
        IoUringSqe s = default;
        Assert.Equal(0, Offset(ref s, ref Unsafe.As<IoUringOpcode, byte>(ref s.Opcode)));
        Assert.Equal(1, Offset(ref s, ref Unsafe.As<SqeFlags, byte>(ref s.Flags)));
        Assert.Equal(2, Offset(ref s, ref Unsafe.As<ushort, byte>(ref s.IoPrio)));
        Assert.Equal(4, Offset(ref s, ref Unsafe.As<int, byte>(ref s.Fd)));
        Assert.Equal(8, Offset(ref s, ref Unsafe.As<ulong, byte>(ref s.Offset)));
        Assert.Equal(16, Offset(ref s, ref Unsafe.As<ulong, byte>(ref s.Address)));
        Assert.Equal(24, Offset(ref s, ref Unsafe.As<uint, byte>(ref s.Length)));
        Assert.Equal(28, Offset(ref s, ref Unsafe.As<uint, byte>(ref s.OpFlags)));
        Assert.Equal(32, Offset(ref s, ref Unsafe.As<ulong, byte>(ref s.UserData)));
        Assert.Equal(40, Offset(ref s, ref Unsafe.As<ushort, byte>(ref s.BufferIndexOrGroup)));
        Assert.Equal(42, Offset(ref s, ref Unsafe.As<ushort, byte>(ref s.Personality)));
        Assert.Equal(44, Offset(ref s, ref Unsafe.As<uint, byte>(ref s.FileIndex)));
        Assert.Equal(48, Offset(ref s, ref Unsafe.As<ulong, byte>(ref s.Address3)));
    }

    [Fact]
    public void CqeAndBufferRingOffsetsMatchTheKernel()
    {
        IoUringCqe c = default;
        Assert.Equal(0, Offset(ref c, ref Unsafe.As<ulong, byte>(ref c.UserData)));
        Assert.Equal(8, Offset(ref c, ref Unsafe.As<int, byte>(ref c.Result)));
        Assert.Equal(12, Offset(ref c, ref Unsafe.As<CqeFlags, byte>(ref c.Flags)));

        IoUringBuf b = default;
        Assert.Equal(0, Offset(ref b, ref Unsafe.As<ulong, byte>(ref b.Address)));
        Assert.Equal(8, Offset(ref b, ref Unsafe.As<uint, byte>(ref b.Length)));
        Assert.Equal(12, Offset(ref b, ref Unsafe.As<ushort, byte>(ref b.BufferId)));
        Assert.Equal(14, Offset(ref b, ref Unsafe.As<ushort, byte>(ref b.Resv))); // the ring's tail in entry 0

        Assert.Equal(8, (int)Marshal.OffsetOf<IoUringBufReg>(nameof(IoUringBufReg.RingEntries)));
        Assert.Equal(12, (int)Marshal.OffsetOf<IoUringBufReg>(nameof(IoUringBufReg.GroupId)));
        Assert.Equal(14, (int)Marshal.OffsetOf<IoUringBufReg>(nameof(IoUringBufReg.Flags)));
        Assert.Equal(16, (int)Marshal.OffsetOf<IoUringBufReg>("Resv"));
    }

    [Fact]
    public void ParamsAndOffsetsLayoutMatchTheKernel()
    {
        Assert.Equal(20, (int)Marshal.OffsetOf<IoUringParams>(nameof(IoUringParams.Features)));
        Assert.Equal(24, (int)Marshal.OffsetOf<IoUringParams>(nameof(IoUringParams.WqFd)));
        Assert.Equal(40, (int)Marshal.OffsetOf<IoUringParams>(nameof(IoUringParams.SqOff)));
        Assert.Equal(80, (int)Marshal.OffsetOf<IoUringParams>(nameof(IoUringParams.CqOff)));
        Assert.Equal(24, (int)Marshal.OffsetOf<SqRingOffsets>(nameof(SqRingOffsets.Array)));
        Assert.Equal(32, (int)Marshal.OffsetOf<SqRingOffsets>(nameof(SqRingOffsets.UserAddr)));
        Assert.Equal(20, (int)Marshal.OffsetOf<CqRingOffsets>(nameof(CqRingOffsets.Cqes)));
        Assert.Equal(24, (int)Marshal.OffsetOf<CqRingOffsets>(nameof(CqRingOffsets.Flags)));
        Assert.Equal(8, (int)Marshal.OffsetOf<GetEventsArg>(nameof(GetEventsArg.SigMaskSize)));
        Assert.Equal(16, (int)Marshal.OffsetOf<GetEventsArg>(nameof(GetEventsArg.Timespec)));
        Assert.Equal(8, (int)Marshal.OffsetOf<MsgHdr>(nameof(MsgHdr.NameLength)));
        Assert.Equal(16, (int)Marshal.OffsetOf<MsgHdr>(nameof(MsgHdr.Iov)));
        Assert.Equal(24, (int)Marshal.OffsetOf<MsgHdr>(nameof(MsgHdr.IovLength)));
        Assert.Equal(48, (int)Marshal.OffsetOf<MsgHdr>(nameof(MsgHdr.Flags)));
    }

    [Fact]
    public void EveryFieldOfTheRemainingStructsSitsWhereTheKernelReadsIt()
    {
        // io_uring_params: sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd, resv[3], sq_off, cq_off.
        string[] paramsFields = [nameof(IoUringParams.SqEntries), nameof(IoUringParams.CqEntries), nameof(IoUringParams.Flags),
            nameof(IoUringParams.SqThreadCpu), nameof(IoUringParams.SqThreadIdle), nameof(IoUringParams.Features), nameof(IoUringParams.WqFd), "Resv"];
        for (int i = 0; i < paramsFields.Length; i++)
        {
            Assert.Equal(i * 4, (int)Marshal.OffsetOf<IoUringParams>(paramsFields[i]));
        }

        // io_sqring_offsets: head, tail, ring_mask, ring_entries, flags, dropped, array, resv1 (u32 each), user_addr u64.
        string[] sqFields = ["Head", "Tail", "RingMask", "RingEntries", "Flags", "Dropped", "Array", "Resv1"];
        for (int i = 0; i < sqFields.Length; i++)
        {
            Assert.Equal(i * 4, (int)Marshal.OffsetOf<SqRingOffsets>(sqFields[i]));
        }
        Assert.Equal(32, (int)Marshal.OffsetOf<SqRingOffsets>("UserAddr"));

        // io_cqring_offsets: head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1, user_addr.
        string[] cqFields = ["Head", "Tail", "RingMask", "RingEntries", "Overflow", "Cqes", "Flags", "Resv1"];
        for (int i = 0; i < cqFields.Length; i++)
        {
            Assert.Equal(i * 4, (int)Marshal.OffsetOf<CqRingOffsets>(cqFields[i]));
        }
        Assert.Equal(32, (int)Marshal.OffsetOf<CqRingOffsets>("UserAddr"));

        Assert.Equal(0, (int)Marshal.OffsetOf<GetEventsArg>(nameof(GetEventsArg.SigMask)));
        Assert.Equal(12, (int)Marshal.OffsetOf<GetEventsArg>(nameof(GetEventsArg.MinWaitUsec)));
        Assert.Equal(8, (int)Marshal.OffsetOf<KernelTimespec>(nameof(KernelTimespec.Nanoseconds)));
        Assert.Equal(0, (int)Marshal.OffsetOf<IoUringBufReg>(nameof(IoUringBufReg.RingAddress)));

        // io_uring_rsrc_update: offset u32, resv u32, data u64.
        Assert.Equal(0, (int)Marshal.OffsetOf<IoUringRsrcUpdate>(nameof(IoUringRsrcUpdate.Offset)));
        Assert.Equal(4, (int)Marshal.OffsetOf<IoUringRsrcUpdate>(nameof(IoUringRsrcUpdate.Resv)));
        Assert.Equal(8, (int)Marshal.OffsetOf<IoUringRsrcUpdate>(nameof(IoUringRsrcUpdate.Data)));

        // io_uring_rsrc_register: nr u32, flags u32, resv2 u64, data u64, tags u64.
        Assert.Equal(0, (int)Marshal.OffsetOf<IoUringRsrcRegister>(nameof(IoUringRsrcRegister.Count)));
        Assert.Equal(4, (int)Marshal.OffsetOf<IoUringRsrcRegister>(nameof(IoUringRsrcRegister.Flags)));
        Assert.Equal(8, (int)Marshal.OffsetOf<IoUringRsrcRegister>(nameof(IoUringRsrcRegister.Resv2)));
        Assert.Equal(16, (int)Marshal.OffsetOf<IoUringRsrcRegister>(nameof(IoUringRsrcRegister.Data)));
        Assert.Equal(24, (int)Marshal.OffsetOf<IoUringRsrcRegister>(nameof(IoUringRsrcRegister.Tags)));

        // io_uring_probe: last_op u8, ops_len u8, resv u16, resv2 u32[3], then ops[] at 16.
        Assert.Equal(0, (int)Marshal.OffsetOf<IoUringProbe>(nameof(IoUringProbe.LastOp)));
        Assert.Equal(1, (int)Marshal.OffsetOf<IoUringProbe>(nameof(IoUringProbe.OpsLength)));
        Assert.Equal(2, (int)Marshal.OffsetOf<IoUringProbe>(nameof(IoUringProbe.Resv)));
        Assert.Equal(4, (int)Marshal.OffsetOf<IoUringProbe>("Resv2"));
        // io_uring_probe_op: op u8, resv u8, flags u16, resv2 u32.
        Assert.Equal(0, (int)Marshal.OffsetOf<IoUringProbeOp>(nameof(IoUringProbeOp.Op)));
        Assert.Equal(1, (int)Marshal.OffsetOf<IoUringProbeOp>(nameof(IoUringProbeOp.Resv)));
        Assert.Equal(2, (int)Marshal.OffsetOf<IoUringProbeOp>(nameof(IoUringProbeOp.Flags)));
        Assert.Equal(4, (int)Marshal.OffsetOf<IoUringProbeOp>(nameof(IoUringProbeOp.Resv2)));

        // struct iovec: iov_base, iov_len. struct msghdr: msg_name, msg_namelen, msg_iov, msg_iovlen, msg_control, msg_controllen, msg_flags.
        Assert.Equal(0, (int)Marshal.OffsetOf<IoVec>(nameof(IoVec.Base)));
        Assert.Equal(8, (int)Marshal.OffsetOf<IoVec>(nameof(IoVec.Length)));
        Assert.Equal(0, (int)Marshal.OffsetOf<MsgHdr>(nameof(MsgHdr.Name)));
        Assert.Equal(32, (int)Marshal.OffsetOf<MsgHdr>(nameof(MsgHdr.Control)));
        Assert.Equal(40, (int)Marshal.OffsetOf<MsgHdr>(nameof(MsgHdr.ControlLength)));

        IoUringSqe s = default;
        Assert.Equal(56, Offset(ref s, ref Unsafe.As<ulong, byte>(ref s.Pad2)));
    }

    [Fact]
    public void EveryOpcodeAndFlagMatchesTheUapiHeader()
    {
        // enum io_uring_op, counted in the header.
        var opcodes = new Dictionary<IoUringOpcode, int>
        {
            [IoUringOpcode.Nop] = 0, [IoUringOpcode.PollAdd] = 6, [IoUringOpcode.SendMsg] = 9, [IoUringOpcode.Timeout] = 11,
            [IoUringOpcode.Accept] = 13, [IoUringOpcode.AsyncCancel] = 14, [IoUringOpcode.LinkTimeout] = 15,
            [IoUringOpcode.Close] = 19, [IoUringOpcode.FilesUpdate] = 20, [IoUringOpcode.Read] = 22, [IoUringOpcode.Send] = 26,
            [IoUringOpcode.Recv] = 27, [IoUringOpcode.Shutdown] = 34, [IoUringOpcode.MsgRing] = 40, [IoUringOpcode.Socket] = 45,
            [IoUringOpcode.UringCmd] = 46, [IoUringOpcode.SendZc] = 47, [IoUringOpcode.SendMsgZc] = 48, [IoUringOpcode.FixedFdInstall] = 54,
        };
        Assert.Equal(Enum.GetValues<IoUringOpcode>().Length, opcodes.Count); // a new opcode needs its expected value here
        foreach (var (op, expected) in opcodes) Assert.True(expected == (int)op, $"{op} is {(int)op}, the header says {expected}");

        // IOSQE_*.
        Assert.Equal([0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40], new[] { SqeFlags.FixedFile, SqeFlags.IoDrain, SqeFlags.IoLink,
            SqeFlags.IoHardLink, SqeFlags.Async, SqeFlags.BufferSelect, SqeFlags.CqeSkipSuccess }.Select(f => (int)f));

        // IORING_SETUP_*.
        Assert.Equal([0x1u, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80, 0x100, 0x200, 0x400, 0x800, 0x1000, 0x2000, 0x4000, 0x8000, 0x10000],
            new[] { SetupFlags.IoPoll, SetupFlags.SqPoll, SetupFlags.SqAff, SetupFlags.CqSize, SetupFlags.Clamp, SetupFlags.AttachWq,
                SetupFlags.RDisabled, SetupFlags.SubmitAll, SetupFlags.CoopTaskRun, SetupFlags.TaskRunFlag, SetupFlags.Sqe128,
                SetupFlags.Cqe32, SetupFlags.SingleIssuer, SetupFlags.DeferTaskRun, SetupFlags.NoMmap, SetupFlags.RegisteredFdOnly,
                SetupFlags.NoSqArray }.Select(f => (uint)f));

        // IORING_FEAT_*: bit n in declaration order, SINGLE_MMAP (bit 0) .. NO_IOWAIT (bit 17).
        var features = Enum.GetValues<KernelFeatures>().Where(f => f != KernelFeatures.None).Select(f => (uint)f).ToArray();
        Assert.Equal(Enumerable.Range(0, 18).Select(i => 1u << i), features);
        Assert.Equal(1u << 8, (uint)KernelFeatures.ExtArg);
        Assert.Equal(1u << 14, (uint)KernelFeatures.RecvSendBundle);

        // IORING_ENTER_*, IORING_SQ_*, IORING_CQE_F_*.
        Assert.Equal([1u, 2, 4, 8, 0x10], new[] { EnterFlags.GetEvents, EnterFlags.SqWakeup, EnterFlags.SqWait, EnterFlags.ExtArg, EnterFlags.RegisteredRing }.Select(f => (uint)f));
        Assert.Equal([1u, 2, 4], new[] { SqRingFlags.NeedWakeup, SqRingFlags.CqOverflow, SqRingFlags.TaskRun }.Select(f => (uint)f));
        Assert.Equal([1u, 2, 4, 8, 0x10], new[] { CqeFlags.Buffer, CqeFlags.More, CqeFlags.SockNonEmpty, CqeFlags.Notification, CqeFlags.BufferMore }.Select(f => (uint)f));
        Assert.Equal(16, IoUringValues.CqeBufferShift);

        // ioprio flags: IORING_RECVSEND_POLL_FIRST, RECV_MULTISHOT, RECVSEND_FIXED_BUF, SEND_ZC_REPORT_USAGE, RECVSEND_BUNDLE; ACCEPT_MULTISHOT.
        Assert.Equal(1, IoPrioFlags.RecvSendPollFirst);
        Assert.Equal(2, IoPrioFlags.RecvMultishot);
        Assert.Equal(4, IoPrioFlags.RecvSendFixedBuffer);
        Assert.Equal(1, IoPrioFlags.AcceptMultishot);

        // IORING_ASYNC_CANCEL_*.
        Assert.Equal([1u, 2, 4, 8, 0x10, 0x20], new[] { CancelFlags.All, CancelFlags.Fd, CancelFlags.Any, CancelFlags.FdFixed, CancelFlags.UserData, CancelFlags.Op }.Select(f => (uint)f));

        // IORING_REGISTER_*.
        var register = new Dictionary<RegisterOpcode, uint>
        {
            [RegisterOpcode.RegisterBuffers] = 0, [RegisterOpcode.UnregisterBuffers] = 1, [RegisterOpcode.RegisterFiles] = 2,
            [RegisterOpcode.UnregisterFiles] = 3, [RegisterOpcode.RegisterEventFd] = 4, [RegisterOpcode.UnregisterEventFd] = 5,
            [RegisterOpcode.RegisterFilesUpdate] = 6, [RegisterOpcode.RegisterProbe] = 8, [RegisterOpcode.RegisterEnableRings] = 12,
            [RegisterOpcode.RegisterFiles2] = 13, [RegisterOpcode.RegisterFilesUpdate2] = 14, [RegisterOpcode.RegisterBuffers2] = 15,
            [RegisterOpcode.RegisterRingFds] = 20, [RegisterOpcode.UnregisterRingFds] = 21, [RegisterOpcode.RegisterPbufRing] = 22,
            [RegisterOpcode.UnregisterPbufRing] = 23, [RegisterOpcode.RegisterSyncCancel] = 24, [RegisterOpcode.RegisterFileAllocRange] = 25,
            [RegisterOpcode.RegisterSendMsgRing] = 31,
        };
        Assert.Equal(Enum.GetValues<RegisterOpcode>().Length, register.Count);
        foreach (var (op, expected) in register) Assert.True(expected == (uint)op, $"{op} is {(uint)op}, the header says {expected}");

        Assert.Equal(0UL, IoUringValues.OffSqRing);
        Assert.Equal(1u, IoUringValues.RsrcRegisterSparse);
        Assert.Equal(2, IoUringValues.PbufRingIncremental);
        Assert.Equal(1, IoUringValues.ProbeOpSupported);
        Assert.Equal(0UL, IoUringValues.MsgRingData);
        Assert.Equal(0x4000, LinuxSyscalls.MsgNoSignal);
        Assert.Equal(0x40, LinuxSyscalls.MsgDontWait);
    }

    [Fact]
    public void ConstantsMatchTheUapiHeader()
    {
        Assert.Equal(425, SyscallNumbers.IoUringSetup);
        Assert.Equal(426, SyscallNumbers.IoUringEnter);
        Assert.Equal(427, SyscallNumbers.IoUringRegister);
        Assert.Equal(0x10000000UL, IoUringValues.OffSqes);
        Assert.Equal(0x8000000UL, IoUringValues.OffCqRing);
        Assert.Equal(13, (int)IoUringOpcode.Accept);
        Assert.Equal(14, (int)IoUringOpcode.AsyncCancel);
        Assert.Equal(19, (int)IoUringOpcode.Close);
        Assert.Equal(22, (int)IoUringOpcode.Read);
        Assert.Equal(26, (int)IoUringOpcode.Send);
        Assert.Equal(27, (int)IoUringOpcode.Recv);
        Assert.Equal(34, (int)IoUringOpcode.Shutdown);
        Assert.Equal(40, (int)IoUringOpcode.MsgRing);
        Assert.Equal(47, (int)IoUringOpcode.SendZc);
        Assert.Equal(48, (int)IoUringOpcode.SendMsgZc);
        Assert.Equal(0x1000u, (uint)SetupFlags.SingleIssuer);
        Assert.Equal(0x2000u, (uint)SetupFlags.DeferTaskRun);
        Assert.Equal(0x10000u, (uint)SetupFlags.NoSqArray);
        Assert.Equal(0x20, (int)SqeFlags.BufferSelect);
        Assert.Equal(0x40, (int)SqeFlags.CqeSkipSuccess);
        Assert.Equal(2, IoPrioFlags.RecvMultishot);
        Assert.Equal(8, IoPrioFlags.SendZcReportUsage);
        Assert.Equal(0x10, IoPrioFlags.RecvSendBundle);
        Assert.Equal(8u, (uint)CqeFlags.Notification);
        Assert.Equal(0x80000000u, IoUringValues.NotifUsageZcCopied);
        Assert.Equal(22u, (uint)RegisterOpcode.RegisterPbufRing);
        Assert.Equal(20u, (uint)RegisterOpcode.RegisterRingFds);
        Assert.Equal(0xFFFFFFFFu, IoUringValues.FileIndexAlloc);
    }
}
