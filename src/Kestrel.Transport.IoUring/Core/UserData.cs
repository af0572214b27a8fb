using System.Runtime.CompilerServices;

namespace Kestrel.Transport.IoUring.Core;

/// <summary>What an SQE was for; the top byte of its user_data.</summary>
internal enum OperationKind : byte
{
    None = 0,
    Accept = 1,
    Receive = 2,
    Send = 3,
    Cancel = 4,
    Close = 5,
    Shutdown = 6,
    Wakeup = 7,
    Timeout = 8,
    Nop = 9,
    Test = 10,
    /// <summary>A SEND_ZC from a registered arena chunk; the generation bits carry the chunk index.</summary>
    ArenaSend = 11,
}

/// <summary>
/// The 64 bits of user_data: operation kind (8 bits) | generation (24 bits) | slot (32 bits). A slot is reused after
/// its connection closes; the generation changes with every reuse, so a late completion that still names the old
/// generation is recognised as stale and dropped instead of touching the new occupant.
/// </summary>
internal readonly record struct UserData(OperationKind Kind, uint Generation, int Slot)
{
    public const uint GenerationMask = 0xFF_FFFF;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Encode(OperationKind kind, uint generation, int slot)
        => ((ulong)kind << 56) | ((ulong)(generation & GenerationMask) << 32) | (uint)slot;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static UserData Decode(ulong value)
        => new((OperationKind)(value >> 56), (uint)(value >> 32) & GenerationMask, (int)(uint)value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static OperationKind KindOf(ulong value) => (OperationKind)(value >> 56);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int SlotOf(ulong value) => (int)(uint)value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint GenerationOf(ulong value) => (uint)(value >> 32) & GenerationMask;

    /// <summary>The generation that follows <paramref name="generation"/>, wrapping within 24 bits.</summary>
    public static uint Next(uint generation) => (generation + 1) & GenerationMask;

    public ulong Value => Encode(Kind, Generation, Slot);
}
