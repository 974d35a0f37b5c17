# Simulated power loss (issue 10): the CI slice (test_power, label crash) and
# the soak program. The soak is built but not registered with ctest (every
# ctest run would include it); scripts/hopper-dev soak SECONDS runs it.
hopper_add_test(test_power
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_power.c
  LABELS crash TIMEOUT 240)
target_link_libraries(test_power PRIVATE hp_crash_helpers)

add_executable(hopper_soak ${CMAKE_CURRENT_SOURCE_DIR}/soak.c)
target_link_libraries(hopper_soak PRIVATE hp_crash_helpers hopper_warnings)
