namespace Kestrel.Transport.IoUring.Abi;

// Values from the kernel's include/uapi/linux/io_uring.h. Every one is checked by AbiLayoutTests.

/// <summary>The three io_uring syscall numbers (identical on x86_64 and aarch64).</summary>
internal static class SyscallNumbers
{
    public const long IoUringSetup = 425;
    public const long IoUringEnter = 426;
    public const long IoUringRegister = 427;
}

/// <summary>IORING_OP_*: the operation an SQE asks for.</summary>
internal enum IoUringOpcode : byte
{
    Nop = 0,
    PollAdd = 6,
    SendMsg = 9,
    Timeout = 11,
    Accept = 13,
    AsyncCancel = 14,
    LinkTimeout = 15,
    Close = 19,
    FilesUpdate = 20,
    Read = 22,
    Send = 26,
    Recv = 27,
    Shutdown = 34,
    MsgRing = 40,
    Socket = 45,
    UringCmd = 46,
    SendZc = 47,
    SendMsgZc = 48,
    FixedFdInstall = 54,
}

/// <summary>IOSQE_*: per-SQE flags.</summary>
[Flags]
internal enum SqeFlags : byte
{
    None = 0,
    FixedFile = 1 << 0,
    IoDrain = 1 << 1,
    IoLink = 1 << 2,
    IoHardLink = 1 << 3,
    Async = 1 << 4,
    BufferSelect = 1 << 5,
    CqeSkipSuccess = 1 << 6,
}

/// <summary>IORING_SETUP_*: flags for io_uring_setup.</summary>
[Flags]
internal enum SetupFlags : uint
{
    None = 0,
    IoPoll = 1 << 0,
    SqPoll = 1 << 1,
    SqAff = 1 << 2,
    CqSize = 1 << 3,
    Clamp = 1 << 4,
    AttachWq = 1 << 5,
    RDisabled = 1 << 6,
    SubmitAll = 1 << 7,
    CoopTaskRun = 1 << 8,
    TaskRunFlag = 1 << 9,
    Sqe128 = 1 << 10,
    Cqe32 = 1 << 11,
    SingleIssuer = 1 << 12,
    DeferTaskRun = 1 << 13,
    NoMmap = 1 << 14,
    RegisteredFdOnly = 1 << 15,
    NoSqArray = 1 << 16,
}

/// <summary>IORING_FEAT_*: what io_uring_setup reports in io_uring_params.features.</summary>
[Flags]
internal enum KernelFeatures : uint
{
    None = 0,
    SingleMmap = 1 << 0,
    NoDrop = 1 << 1,
    SubmitStable = 1 << 2,
    RwCurPos = 1 << 3,
    CurPersonality = 1 << 4,
    FastPoll = 1 << 5,
    Poll32Bits = 1 << 6,
    SqPollNonFixed = 1 << 7,
    ExtArg = 1 << 8,
    NativeWorkers = 1 << 9,
    RsrcTags = 1 << 10,
    CqeSkip = 1 << 11,
    LinkedFile = 1 << 12,
    RegRegRing = 1 << 13,
    RecvSendBundle = 1 << 14,
    MinTimeout = 1 << 15,
    RwAttr = 1 << 16,
    NoIoWait = 1 << 17,
}

/// <summary>IORING_ENTER_*: flags for io_uring_enter.</summary>
[Flags]
internal enum EnterFlags : uint
{
    None = 0,
    GetEvents = 1 << 0,
    SqWakeup = 1 << 1,
    SqWait = 1 << 2,
    ExtArg = 1 << 3,
    RegisteredRing = 1 << 4,
}

/// <summary>IORING_SQ_*: flags the kernel sets in the SQ ring's flags word.</summary>
[Flags]
internal enum SqRingFlags : uint
{
    None = 0,
    NeedWakeup = 1 << 0,
    CqOverflow = 1 << 1,
    TaskRun = 1 << 2,
}

/// <summary>IORING_CQE_F_*: flags on a completion.</summary>
[Flags]
internal enum CqeFlags : uint
{
    None = 0,
    Buffer = 1 << 0,
    More = 1 << 1,
    SockNonEmpty = 1 << 2,
    Notification = 1 << 3,
    BufferMore = 1 << 4,
}

/// <summary>Flags that travel in the SQE's ioprio field for send, recv and accept.</summary>
internal static class IoPrioFlags
{
    public const ushort RecvSendPollFirst = 1 << 0;
    public const ushort RecvMultishot = 1 << 1;
    public const ushort RecvSendFixedBuffer = 1 << 2;
    public const ushort SendZcReportUsage = 1 << 3;
    public const ushort RecvSendBundle = 1 << 4;
    public const ushort AcceptMultishot = 1 << 0;
}

/// <summary>IORING_ASYNC_CANCEL_*: flags in the SQE's op-flags word for ASYNC_CANCEL.</summary>
[Flags]
internal enum CancelFlags : uint
{
    None = 0,
    All = 1 << 0,
    Fd = 1 << 1,
    Any = 1 << 2,
    FdFixed = 1 << 3,
    UserData = 1 << 4,
    Op = 1 << 5,
}

/// <summary>IORING_REGISTER_*: io_uring_register opcodes.</summary>
internal enum RegisterOpcode : uint
{
    RegisterBuffers = 0,
    UnregisterBuffers = 1,
    RegisterFiles = 2,
    UnregisterFiles = 3,
    RegisterEventFd = 4,
    UnregisterEventFd = 5,
    RegisterFilesUpdate = 6,
    RegisterProbe = 8,
    RegisterEnableRings = 12,
    RegisterFiles2 = 13,
    RegisterFilesUpdate2 = 14,
    RegisterBuffers2 = 15,
    RegisterRingFds = 20,
    UnregisterRingFds = 21,
    RegisterPbufRing = 22,
    UnregisterPbufRing = 23,
    RegisterSyncCancel = 24,
    RegisterFileAllocRange = 25,
    RegisterSendMsgRing = 31,
}

/// <summary>Assorted io_uring constants that are not flag sets of their own.</summary>
internal static class IoUringValues
{
    public const ulong OffSqRing = 0;
    public const ulong OffCqRing = 0x8000000;
    public const ulong OffSqes = 0x10000000;

    /// <summary>IORING_FILE_INDEX_ALLOC: let the kernel pick a free direct descriptor.</summary>
    public const uint FileIndexAlloc = 0xFFFFFFFF;

    /// <summary>IORING_RSRC_REGISTER_SPARSE: register an empty (all -1) file table.</summary>
    public const uint RsrcRegisterSparse = 1;

    /// <summary>IORING_NOTIF_USAGE_ZC_COPIED: a SEND_ZC notification saying the kernel copied the data after all.</summary>
    public const uint NotifUsageZcCopied = 0x80000000;

    /// <summary>IORING_CQE_BUFFER_SHIFT: the buffer id sits in the upper 16 bits of cqe.flags.</summary>
    public const int CqeBufferShift = 16;

    /// <summary>IOU_PBUF_RING_INC: incremental consumption of provided buffers (6.12).</summary>
    public const ushort PbufRingIncremental = 2;

    /// <summary>IO_URING_OP_SUPPORTED in io_uring_probe_op.flags.</summary>
    public const ushort ProbeOpSupported = 1;

    /// <summary>IORING_TIMEOUT_ETIME_SUCCESS and friends are not used; 0 means a relative timeout.</summary>
    public const uint TimeoutRelative = 0;

    /// <summary>IORING_MSG_DATA: MSG_RING posts a CQE with the given user_data and res on the target ring.</summary>
    public const ulong MsgRingData = 0;

    /// <summary>_NSIG / 8: the sigmask size the kernel expects alongside a (null) sigmask.</summary>
    public const uint SigSetSize = 8;
}
