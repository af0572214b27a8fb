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
