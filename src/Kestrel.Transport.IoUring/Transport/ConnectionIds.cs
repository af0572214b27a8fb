namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// Connection ids in the shape Kestrel uses: 13 base-32 characters of a counter seeded from the clock, so ids differ
/// across restarts and never repeat within a process.
/// </summary>
internal static class ConnectionIds
{
    private const string Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUV";
    private static long s_last = DateTime.UtcNow.Ticks;

    public static string Next()
    {
        long id = Interlocked.Increment(ref s_last);
        return string.Create(13, id, static (span, value) =>
        {
            for (int i = 12; i >= 0; i--)
            {
                span[i] = Alphabet[(int)(value & 31)];
                value >>= 5;
            }
        });
    }
}
