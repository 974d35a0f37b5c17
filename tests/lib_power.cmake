# Simulated power loss (issue 10): the CI slice (test_power, label crash).
hopper_add_test(test_power
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_power.c
  LABELS crash TIMEOUT 240)
target_link_libraries(test_power PRIVATE hp_crash_helpers)
