using Kestrel.Transport.IoUring;

namespace Benchmarks;

/// <summary>The io_uring options a run sets through configuration, checked against the options the transport has.</summary>
public static class IoUringOptionOverrides
{
    /// <summary>
    /// Returns "Name=value" for every key of the Kestrel:IoUring section; throws InvalidOperationException naming the key
    /// when one is not an option of <see cref="IoUringTransportOptions"/> (e.g. an option of a newer transport).
    /// </summary>
    public static IReadOnlyList<string> Read(IConfiguration configuration)
    {
        IConfigurationSection section = configuration.GetSection(WebHostBuilderIoUringExtensions.ConfigurationSection);
        section.Get<IoUringTransportOptions>(binder => binder.ErrorOnUnknownConfiguration = true);
        return section.GetChildren().Select(c => $"{c.Key}={c.Value}").OrderBy(s => s, StringComparer.Ordinal).ToList();
    }
}
