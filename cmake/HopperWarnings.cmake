add_library(hopper_warnings INTERFACE)
target_compile_options(hopper_warnings INTERFACE
  -Wall -Wextra -Wshadow -Wwrite-strings -Wformat=2 -Wstrict-prototypes
  -Wmissing-prototypes -Wvla -Wimplicit-fallthrough)
if(HOPPER_WERROR)
  target_compile_options(hopper_warnings INTERFACE -Werror)
endif()
