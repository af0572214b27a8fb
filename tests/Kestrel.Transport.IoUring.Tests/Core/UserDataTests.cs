using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Tests.Core;

public sealed class UserDataTests
{
    [Theory]
    [InlineData((byte)OperationKind.Receive, 0u, 0)]
    [InlineData((byte)OperationKind.Send, 0xFF_FFFFu, int.MaxValue)]
    [InlineData((byte)OperationKind.ArenaSend, 12345u, 65535)]
    public void EncodeDecodeRoundTrips(byte kindValue, uint generation, int slot)
    {
        var kind = (OperationKind)kindValue;
        ulong value = UserData.Encode(kind, generation, slot);
        var decoded = UserData.Decode(value);
        Assert.Equal(kind, decoded.Kind);
        Assert.Equal(generation, decoded.Generation);
        Assert.Equal(slot, decoded.Slot);
        Assert.Equal(kind, UserData.KindOf(value));
        Assert.Equal(slot, UserData.SlotOf(value));
        Assert.Equal(generation, UserData.GenerationOf(value));
        Assert.Equal(value, decoded.Value);
    }

    [Fact]
    public void GenerationWrapsWithin24Bits()
    {
        Assert.Equal(0u, UserData.Next(UserData.GenerationMask));
        Assert.Equal(1u, UserData.Next(0));
    }

    [Fact]
    public void AGenerationBeyond24BitsIsMaskedAndLeavesKindAndSlotAlone()
    {
        ulong value = UserData.Encode(OperationKind.Send, UserData.GenerationMask + 6, -1);
        Assert.Equal(5u, UserData.GenerationOf(value));
        Assert.Equal(OperationKind.Send, UserData.KindOf(value));
        Assert.Equal(-1, UserData.SlotOf(value));
    }

    [Fact]
    public void AStaleGenerationStaysDistinguishableAcrossTheWrap()
    {
        uint last = UserData.GenerationMask;
        uint wrapped = UserData.Next(last);
        ulong stale = UserData.Encode(OperationKind.Receive, last, 3);
        ulong current = UserData.Encode(OperationKind.Receive, wrapped, 3);
        Assert.NotEqual(stale, current);
        Assert.Equal(wrapped, UserData.Decode(current).Generation);
        Assert.NotEqual(UserData.Decode(current).Generation, UserData.Decode(stale).Generation);

        // A slot cycles through 2^24 generations before one repeats.
        uint g = 17;
        for (int i = 0; i < 1000; i++) g = UserData.Next(g);
        Assert.NotEqual(17u, g);
    }

    [Fact]
    public void AStaleGenerationIsDistinguishable()
    {
        uint old = 41;
        ulong stale = UserData.Encode(OperationKind.Receive, old, 9);
        ulong current = UserData.Encode(OperationKind.Receive, UserData.Next(old), 9);
        Assert.NotEqual(stale, current);
        Assert.Equal(UserData.SlotOf(stale), UserData.SlotOf(current));
        Assert.NotEqual(UserData.GenerationOf(stale), UserData.GenerationOf(current));
    }
}
