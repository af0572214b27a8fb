using Kestrel.Transport.IoUring;
using Kestrel.Transport.IoUring.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Microsoft.AspNetCore.Hosting;

/// <summary>
/// Adds the io_uring transport's health check: <c>builder.Services.AddHealthChecks().AddIoUringHealthCheck();</c>
/// then <c>app.MapHealthChecks("/healthz");</c>.
/// </summary>
public static class HealthChecksBuilderIoUringExtensions
{
    /// <summary>The check's default registration name.</summary>
    public const string DefaultName = "io_uring";

    /// <summary>
    /// Healthy while io_uring serves; <paramref name="failureStatus"/> (Degraded by default), with the reason, once the
    /// app fell back to the Sockets transport. Needs <c>UseIoUring()</c>.
    /// </summary>
    public static IHealthChecksBuilder AddIoUringHealthCheck(this IHealthChecksBuilder builder, string name = DefaultName,
        HealthStatus failureStatus = HealthStatus.Degraded, IEnumerable<string>? tags = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.Add(new HealthCheckRegistration(name,
            services => new IoUringHealthCheck(services.GetRequiredService<IoUringTransportFactory>()), failureStatus, tags));
    }
}
