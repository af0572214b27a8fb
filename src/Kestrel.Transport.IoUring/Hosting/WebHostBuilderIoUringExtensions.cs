using Kestrel.Transport.IoUring;
using Kestrel.Transport.IoUring.Transport;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace Microsoft.AspNetCore.Hosting;

/// <summary>Makes Kestrel serve over io_uring: <c>builder.WebHost.UseIoUring();</c>.</summary>
public static class WebHostBuilderIoUringExtensions
{
    /// <summary>The configuration section bound to <see cref="IoUringTransportOptions"/>.</summary>
    public const string ConfigurationSection = "Kestrel:IoUring";

    /// <summary>
    /// Serves every endpoint Kestrel binds (IP, Unix socket, file handle) over io_uring, falling back to the Sockets
    /// transport with a warning where io_uring cannot be used. Works whether it is called before or after
    /// <c>UseKestrel()</c>. Options bind from the "Kestrel:IoUring" configuration section.
    /// </summary>
    public static IWebHostBuilder UseIoUring(this IWebHostBuilder hostBuilder)
    {
        ArgumentNullException.ThrowIfNull(hostBuilder);
        return hostBuilder.ConfigureServices((context, services) =>
        {
            if (services.Any(d => d.ServiceType == typeof(IoUringTransportFactory)))
            {
                return; // already registered by an earlier call
            }
            // Bound by the configuration-binding source generator (trim- and AOT-safe); validated when the host
            // starts, not at the first bind.
            services.AddOptions<IoUringTransportOptions>()
                .Bind(context.Configuration.GetSection(ConfigurationSection))
                .ValidateOnStart();
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<IoUringTransportOptions>, IoUringTransportOptionsValidator>());
            // The fall-back is the transport Kestrel would use without io_uring. UseKestrel and UseSockets register
            // it only if no transport is registered yet, so when UseIoUring comes first it registers the same
            // Sockets factory itself; either way the app's SocketTransportOptions (UseSockets) configure it.
            services.TryAddSingleton<IConnectionListenerFactory, SocketTransportFactory>();
            services.AddSingleton<IoUringTransportFactory>();
            // Kestrel tries the factories registered last first, and UseKestrel only TryAdds Sockets: appending ours
            // makes io_uring serve whichever of the two calls comes first.
            services.AddSingleton<IConnectionListenerFactory>(sp => sp.GetRequiredService<IoUringTransportFactory>());
        });
    }

    /// <summary>As <see cref="UseIoUring(IWebHostBuilder)"/>, then applies <paramref name="configureOptions"/>.</summary>
    public static IWebHostBuilder UseIoUring(this IWebHostBuilder hostBuilder, Action<IoUringTransportOptions> configureOptions)
    {
        ArgumentNullException.ThrowIfNull(configureOptions);
        return hostBuilder.UseIoUring().ConfigureServices(services => services.Configure(configureOptions));
    }
}
