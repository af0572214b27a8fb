using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Abi;

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
