// Sanitizer and fuzz builds only (SpadeDependencies.cmake): the implementation of the system's
// stb_image and stb_image_write (libstb-dev's headers), compiled with our instrumentation in
// place of Debian's prebuilt libstb.
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
