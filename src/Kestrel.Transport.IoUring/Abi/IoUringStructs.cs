using System.Runtime.InteropServices;

namespace Kestrel.Transport.IoUring.Abi;

// Layouts of the uapi structs this project shares with the kernel. Sizes and offsets are asserted in AbiLayoutTests.

/// <summary>struct io_uring_sqe (64 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 64)]
internal struct IoUringSqe
{
    [FieldOffset(0)] public IoUringOpcode Opcode;
    [FieldOffset(1)] public SqeFlags Flags;
    [FieldOffset(2)] public ushort IoPrio;
    [FieldOffset(4)] public int Fd;
    /// <summary>off / addr2 / cmd_op.</summary>
    [FieldOffset(8)] public ulong Offset;
    /// <summary>addr / splice_off_in.</summary>
    [FieldOffset(16)] public ulong Address;
    [FieldOffset(24)] public uint Length;
    /// <summary>The op-specific flags word: msg_flags, accept_flags, cancel_flags, timeout_flags, ...</summary>
    [FieldOffset(28)] public uint OpFlags;
    [FieldOffset(32)] public ulong UserData;
    /// <summary>buf_index (fixed buffers) or buf_group (provided buffers).</summary>
    [FieldOffset(40)] public ushort BufferIndexOrGroup;
    [FieldOffset(42)] public ushort Personality;
    /// <summary>file_index / splice_fd_in / addr_len.</summary>
    [FieldOffset(44)] public uint FileIndex;
    [FieldOffset(48)] public ulong Address3;
    [FieldOffset(56)] public ulong Pad2;
}

/// <summary>struct io_uring_cqe (16 bytes, without CQE32).</summary>
[StructLayout(LayoutKind.Explicit, Size = 16)]
internal struct IoUringCqe
{
    [FieldOffset(0)] public ulong UserData;
    [FieldOffset(8)] public int Result;
    [FieldOffset(12)] public CqeFlags Flags;

    public readonly bool HasMore => (Flags & CqeFlags.More) != 0;
    public readonly bool HasBuffer => (Flags & CqeFlags.Buffer) != 0;
    public readonly bool IsNotification => (Flags & CqeFlags.Notification) != 0;
    public readonly ushort BufferId => (ushort)((uint)Flags >> IoUringValues.CqeBufferShift);
}

/// <summary>struct io_sqring_offsets (40 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct SqRingOffsets
{
    public uint Head;
    public uint Tail;
    public uint RingMask;
    public uint RingEntries;
    public uint Flags;
    public uint Dropped;
    public uint Array;
    public uint Resv1;
    public ulong UserAddr;
}

/// <summary>struct io_cqring_offsets (40 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct CqRingOffsets
{
    public uint Head;
    public uint Tail;
    public uint RingMask;
    public uint RingEntries;
    public uint Overflow;
    public uint Cqes;
    public uint Flags;
    public uint Resv1;
    public ulong UserAddr;
}

/// <summary>struct io_uring_params (120 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IoUringParams
{
    public uint SqEntries;
    public uint CqEntries;
    public SetupFlags Flags;
    public uint SqThreadCpu;
    public uint SqThreadIdle;
    public KernelFeatures Features;
    public uint WqFd;
    public fixed uint Resv[3];
    public SqRingOffsets SqOff;
    public CqRingOffsets CqOff;
}

/// <summary>struct io_uring_getevents_arg (24 bytes), used with IORING_ENTER_EXT_ARG.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct GetEventsArg
{
    public ulong SigMask;
    public uint SigMaskSize;
    public uint MinWaitUsec;
    public ulong Timespec;
}

/// <summary>struct __kernel_timespec (16 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct KernelTimespec
{
    public long Seconds;
    public long Nanoseconds;
}

/// <summary>struct io_uring_buf (16 bytes): one entry of a provided buffer ring.</summary>
[StructLayout(LayoutKind.Explicit, Size = 16)]
internal struct IoUringBuf
{
    [FieldOffset(0)] public ulong Address;
    [FieldOffset(8)] public uint Length;
    [FieldOffset(12)] public ushort BufferId;
    /// <summary>In entry 0 this word is the ring's tail (struct io_uring_buf_ring overlays it).</summary>
    [FieldOffset(14)] public ushort Resv;
}

/// <summary>struct io_uring_buf_reg (40 bytes): argument of IORING_REGISTER_PBUF_RING.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IoUringBufReg
{
    public ulong RingAddress;
    public uint RingEntries;
    public ushort GroupId;
    public ushort Flags;
    public fixed ulong Resv[3];
}

/// <summary>struct io_uring_rsrc_update / io_uring_files_update (16 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct IoUringRsrcUpdate
{
    public uint Offset;
    public uint Resv;
    public ulong Data;
}

/// <summary>struct io_uring_rsrc_register (32 bytes): argument of IORING_REGISTER_FILES2 / BUFFERS2.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct IoUringRsrcRegister
{
    public uint Count;
    public uint Flags;
    public ulong Resv2;
    public ulong Data;
    public ulong Tags;
}

/// <summary>struct io_uring_probe header (16 bytes), followed by io_uring_probe_op[ops_len].</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IoUringProbe
{
    public byte LastOp;
    public byte OpsLength;
    public ushort Resv;
    public fixed uint Resv2[3];
}

/// <summary>struct io_uring_probe_op (8 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct IoUringProbeOp
{
    public byte Op;
    public byte Resv;
    public ushort Flags;
    public uint Resv2;
}

/// <summary>struct iovec (16 bytes on 64-bit).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IoVec
{
    public void* Base;
    public nuint Length;
}

/// <summary>struct msghdr (56 bytes on 64-bit Linux).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct MsgHdr
{
    public void* Name;
    public uint NameLength;
    public IoVec* Iov;
    public nuint IovLength;
    public void* Control;
    public nuint ControlLength;
    public int Flags;
}
